"""Using a trained model: prediction on recorded video, the live monitor, export (README "Use a trained model")."""
