"""What runs inside a rank or analyzer process (no Ray imports).

Base classes, code loader, component builder, trainer, output capture, analysis.
"""
