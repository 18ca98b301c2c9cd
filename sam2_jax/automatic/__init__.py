"""Segmentation without prompts: the automatic mask generator of still images (`masks`) and the prompt-free
video tracker that seeds and adds objects with it (`video`)."""
