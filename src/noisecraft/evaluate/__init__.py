"""Evaluation: standard metrics (FID, KID, IS on Inception-v3 features), offline classifier metrics, reports."""
from noisecraft.evaluate.classifier import (
    Classifier,
    ClassifierConfig,
    classifier_accuracy,
    get_classifier,
    train_classifier,
)

__all__ = ["Classifier", "ClassifierConfig", "classifier_accuracy", "get_classifier", "train_classifier"]
