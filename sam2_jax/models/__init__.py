"""The networks: one flax.linen module per subnetwork (Hiera, prompt encoder, mask decoder, memory attention
and encoder) and the SAM 2 image and video modules that join them; param paths mirror transformers' keys."""
