"""The model: the classifier and its runtimes, installed models, explanations."""
