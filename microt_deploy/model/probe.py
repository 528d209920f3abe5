"""Linear-probe accuracy: how linearly separable a set of features is for a task.

A multinomial logistic regression (the public MicroT code's stand-in for the on-device classifier)
fitted on one set of features and scored on another. Used by training (part / full features before
and after joint training) and by export (float vs int8 features).
"""

from __future__ import annotations

import warnings

import numpy as np


def linear_probe_accuracy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray) -> float:
    """Fit on (train_x, train_y), return accuracy on (test_x, test_y); features are standardised."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    train_x = np.asarray(train_x, dtype=np.float64).reshape(len(train_x), -1)
    test_x = np.asarray(test_x, dtype=np.float64).reshape(len(test_x), -1)
    mean = train_x.mean(axis=0)
    std = train_x.std(axis=0) + 1e-6
    if len(np.unique(train_y)) < 2:
        return float(np.mean(test_y == train_y[0]))
    clf = LogisticRegression(max_iter=300, C=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit((train_x - mean) / std, train_y)
    return float(np.mean(clf.predict((test_x - mean) / std) == test_y))
