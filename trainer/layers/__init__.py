"""Keras layers of the model, one per module, all registered serialisable (package "mer")."""

from trainer.layers.association import InterestAssociation
from trainer.layers.dhen import DHEN
from trainer.layers.differentiable_clustering import DifferentiableClustering
from trainer.layers.farthest_point_init import farthest_point_init
from trainer.layers.frequency_estimator import StreamingFrequencyEstimator
from trainer.layers.interest_tokens import InterestTokens
from trainer.layers.item_feature_store import ItemFeatureStore
from trainer.layers.item_summarizer import ItemSummarizer
from trainer.layers.mlp import MLP
from trainer.layers.parallel_masknet import ParallelMaskNet
from trainer.layers.self_attentive import SelfAttentiveInterests
from trainer.layers.sequence_encoder import SequenceEncoder
from trainer.layers.squash import squash
from trainer.layers.subsequence_concepts import SubsequenceConcepts
from trainer.layers.transformer_encoder import TransformerEncoder

__all__ = [
    "DHEN", "MLP", "DifferentiableClustering", "InterestAssociation", "InterestTokens",
    "ItemFeatureStore", "ItemSummarizer", "ParallelMaskNet", "SelfAttentiveInterests", "SequenceEncoder",
    "StreamingFrequencyEstimator", "SubsequenceConcepts", "TransformerEncoder",
    "farthest_point_init", "squash",
]
