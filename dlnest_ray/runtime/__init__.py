"""What runs inside a rank or analyzer process (no Ray imports): base classes, loader, trainer, output, analysis."""
