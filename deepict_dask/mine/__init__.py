"""Unsupervised feature mining: Autoencoder3D, k-means and weak labels for EDSS3D (deepict mine)."""
