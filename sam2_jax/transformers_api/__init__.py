"""The transformers-shaped classes over the tracking core: `Sam2Model` and `Sam2Processor` (`image`), the
video session, processor and model (`video_session`, `video_processor`, `video_model`)."""
