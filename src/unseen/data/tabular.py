"""Tabular preprocessing fitted on the training split only: impute, one-hot encode, standardize.

Fitting on test rows would leak them into the model; every statistic here comes from ``train``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler


def fit_transform_tables(
    train: pd.DataFrame, test: pd.DataFrame, categorical: list[str] | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Return float32 feature matrices for ``train`` and ``test`` and the output feature names.

    ``categorical`` columns are one-hot encoded (missing values become their own category); other
    columns are median-imputed and standardized. By default, non-numeric columns are categorical.
    """
    if categorical is None:
        categorical = [c for c in train.columns if not pd.api.types.is_numeric_dtype(train[c])]
    numeric = [c for c in train.columns if c not in categorical]
    transformer = ColumnTransformer(
        [
            ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric),
            (
                "cat",
                make_pipeline(
                    SimpleImputer(strategy="constant", fill_value="missing"),
                    OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                ),
                categorical,
            ),
        ],
        sparse_threshold=0.0,
        verbose_feature_names_out=False,
    )
    cat_train = train.copy()
    cat_test = test.copy()
    for c in categorical:  # one dtype per categorical column, so numbers coded as categories work too
        cat_train[c] = cat_train[c].astype("string").astype(object).where(cat_train[c].notna(), np.nan)
        cat_test[c] = cat_test[c].astype("string").astype(object).where(cat_test[c].notna(), np.nan)
    x_train = transformer.fit_transform(cat_train).astype(np.float32)
    x_test = transformer.transform(cat_test).astype(np.float32)
    return x_train, x_test, [str(n) for n in transformer.get_feature_names_out()]
