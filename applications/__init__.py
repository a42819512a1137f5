"""Models, losses and learning-rate rules of the FlipReID system."""
