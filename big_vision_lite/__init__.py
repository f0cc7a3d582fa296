"""big_vision_lite: contrastive image-text pretraining (CLIP softmax, SigLIP sigmoid) in JAX/Flax."""

__version__ = "0.1.0"
