"""Prompting: templates, label words, demonstration selection and label scoring with a causal LM."""
