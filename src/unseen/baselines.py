"""Reference models trained centrally on pooled data, to compare a federated run against.

Pooling is exactly what federated learning avoids; the baseline shows what accuracy that avoidance
costs. It uses scikit-learn's logistic regression (L2, lbfgs), an independent implementation.
"""

from __future__ import annotations

from sklearn.linear_model import LogisticRegression

from unseen.data import Dataset


def central_logistic_regression(dataset: Dataset, *, seed: int = 0) -> float:
    """Test accuracy of a logistic regression trained on the pooled training data."""
    x_train = dataset.train.x.reshape(len(dataset.train), -1)
    x_test = dataset.test.x.reshape(len(dataset.test), -1)
    model = LogisticRegression(max_iter=5000, random_state=seed)
    model.fit(x_train, dataset.train.y)
    return float(model.score(x_test, dataset.test.y))
