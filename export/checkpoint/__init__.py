"""Reading checkpoints: HF and OpenCLIP weights into the TF CLIP (`loader`), their preprocessing and tokenizer files
as the runtime's objects (`files`), and the check that the runtime prepares pixels as the checkpoint's own library does
(`preprocess_check`)."""
