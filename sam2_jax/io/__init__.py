"""Data in and out, no model code: frame sources (`frames`), mask writers and RLE (`writers`,
`image_writers`), generated clips (`clips`), DAVIS / SA-V readers (`datasets`) and J&F (`evaluation`)."""
