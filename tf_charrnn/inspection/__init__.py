"""Looking inside a trained run (Karpathy, Johnson and Fei-Fei 2015, "Visualizing and Understanding
Recurrent Networks"): text features, the cells that follow them, gate saturation, and the report."""
