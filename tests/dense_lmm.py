"""Dense brute-force matrices of a fitted model, for tests: Z, Lambda, X, W built explicitly.

Only for small n: everything is an n x n or q x q dense array.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import block_diag

from sklmm._model.terms import build_terms


class DenseModel:
    """Z (n x q), Lambda (q x q), X (n x p, intercept first), y and w of a fitted model's training rows."""

    def __init__(self, model):
        data = model._training_data
        self.y = data.y
        self.X = np.column_stack([np.ones(len(data.y)), data.X]) if data.fit_intercept else data.X
        self.w = np.ones(len(data.y)) if data.weights is None else data.weights
        self.terms = build_terms(data.specs, data.X, list(data.feature_names), data.groups)
        blocks = []
        for term in self.terms:
            z = term.z_values()
            Z = np.zeros((len(self.y), term.q))
            for c in range(term.n_columns):
                Z[np.arange(len(self.y)), term.refs * term.n_columns + c] = z[:, c]
            blocks.append(Z)
        self.Z = np.hstack(blocks)

    def Lambda(self, theta: np.ndarray) -> np.ndarray:
        lams, start = [], 0
        for term in self.terms:
            lams.append(np.kron(np.eye(term.n_levels), term.lambda_from(theta[start : start + term.n_theta])))
            start += term.n_theta
        return block_diag(*lams)

    def mme(self, theta: np.ndarray) -> np.ndarray:
        """Henderson's mixed-model equations in spherical coordinates: [[L'Z'WZL + I, L'Z'WX], [X'WZL, X'WX]]."""
        ZL = self.Z @ self.Lambda(theta)
        W = self.w[:, None]
        top = np.hstack([ZL.T @ (W * ZL) + np.eye(ZL.shape[1]), ZL.T @ (W * self.X)])
        bottom = np.hstack([self.X.T @ (W * ZL), self.X.T @ (W * self.X)])
        return np.vstack([top, bottom])
