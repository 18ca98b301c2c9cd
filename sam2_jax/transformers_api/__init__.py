"""The transformers-shaped classes over the tracking core: `Sam2Model` and `Sam2Processor` (`image`), the
video session and its accessors (`video_session`, `session_state`), processors (`video_processor`,
`video_frames`) and model (`video_model`, `video_features`); device arguments (`devices`)."""
