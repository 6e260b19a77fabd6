"""The model: its card, the classifier and its runtimes, installed models, explanations."""
