"""Lightning strategies (``Trainer(strategy="olga")``); planned in the "Lightning strategy" issue."""
