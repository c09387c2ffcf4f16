"""Fusion of per-view probabilities into one fine-label prediction.

Every fuser shares one small interface: `fit(probas_by_view, y)` on validation predictions,
`predict_proba(probas_by_view)`, `summary()` (what it learned, for people) and `to_record()` /
`from_record(record, parents)` (its fitted state as JSON, restored with no refitting). A view
that predicts a coarser level is related to the fine classes by the taxonomy's `parent` map
(fine class id -> ancestor id at the view's level). The strategies:

- product: p(fine) ∝ Π_v p_v(ancestor)^w_v, one learned exponent per view (a log-linear pool).
- convex: p(fine) = Σ_v w_v p_v(fine), learned weights on the simplex (a linear pool). A coarse
  view's probability of an ancestor is shared evenly among the fine classes under it: the view
  says nothing about how to split it, and the even split claims nothing either.
- stacking: a multinomial logistic regression on every view's log-probabilities.
- gating: a mixture of experts; a small network reads each example's view predictions and
  gives that example its own convex weights, so it can trust a view where it is reliable.
- best_view: no combination at all, the one view with the lowest log-loss, its probabilities
  sharpened or softened by one fitted exponent (temperature scaling: its predicted classes stay
  its own, its confidence becomes honest). As a candidate of `auto` it is cross-fitted like the
  others, so a fuser that does worse than the best view on held-out folds is never picked.

Specialist views (a view's `classes:`, trained on those classes' examples alone) are no input
of these strategies: each strategy fuses the views that answer every class, and the specialists
then refine how the fused probability of their classes is shared out among them (RefinedFusion).
"""
from __future__ import annotations

from functools import partial, wraps
from typing import Callable

import numpy as np
from scipy.optimize import minimize, minimize_scalar
from threadpoolctl import threadpool_limits

from granular.config import FusionConfig
from granular.core.evaluate import classification_metrics, log_loss, ranking_metrics

_EPS = 1e-12
# The learned meta-models read log-probabilities floored here: below it the differences are noise,
# and a log of 1e-12 would be an outlier that dominates a linear model.
_FEATURE_FLOOR = 1e-6
_MAX_ITERATIONS = 1000
_MAX_EXPONENT = 5.0  # the largest power a view's probabilities are raised to (product, best_view)


def _one_blas_thread(fit: Callable) -> Callable:
    """Fit with one BLAS thread: on problems this small, threads cost more than they save (on a
    busy machine L-BFGS's vector steps ran a thousand times slower with two), and one thread
    adds in the same order every time."""

    @wraps(fit)
    def fit_on_one_thread(*args, **kwargs):
        with threadpool_limits(limits=1):
            return fit(*args, **kwargs)

    return fit_on_one_thread


def _check_views(probas_by_view: dict[str, np.ndarray], parents: dict[str, np.ndarray]) -> None:
    missing = sorted(set(parents) - set(probas_by_view))
    if missing:
        raise ValueError(f"fusion needs predictions of view(s) {missing}")


def _log_scores(probas_by_view: dict[str, np.ndarray], parents: dict[str, np.ndarray]) -> np.ndarray:
    """(V, N, F): log-probability each view gives each fine class (through its ancestor)."""
    _check_views(probas_by_view, parents)
    return np.stack([np.log(np.clip(probas_by_view[v][:, parents[v]], _EPS, None)) for v in parents])


def _fine_distributions(probas_by_view: dict[str, np.ndarray], parents: dict[str, np.ndarray]) -> np.ndarray:
    """(V, N, F): each view's distribution over fine classes, a coarse view's ancestor probability
    shared evenly among the ancestor's fine classes."""
    _check_views(probas_by_view, parents)
    spread = []
    for view, parent in parents.items():
        children = np.bincount(parent, minlength=probas_by_view[view].shape[1])  # fine classes per ancestor
        spread.append(probas_by_view[view][:, parent] / children[parent])
    return np.stack(spread)


def _truth_probabilities(distributions: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(N, V): the probability each view gives the true fine class, floored away from 0."""
    return np.clip(distributions[:, np.arange(len(y)), y].T, _EPS, None)


def _log_features(probas_by_view: dict[str, np.ndarray], views: list[str]) -> np.ndarray:
    """(N, Σ classes of each view): every view's floored log-probabilities over its own classes. A
    linear model over a coarse view's coarse columns expresses whatever it could over copies
    mapped to the fine classes, with fewer features."""
    return np.hstack([np.log(np.clip(probas_by_view[v], _FEATURE_FLOOR, None)) for v in views])


def _confidence_features(probas_by_view: dict[str, np.ndarray], views: list[str]) -> np.ndarray:
    """(N, 2V): each view's highest probability and entropy (how sure it is of this example)."""
    columns = []
    for view in views:
        proba = np.clip(probas_by_view[view], _EPS, None)
        columns += [proba.max(axis=1), -(proba * np.log(proba)).sum(axis=1)]
    return np.stack(columns, axis=1)


def _softmax(scores: np.ndarray) -> np.ndarray:
    scores = scores - scores.max(axis=-1, keepdims=True)
    exp = np.exp(scores)
    return exp / exp.sum(axis=-1, keepdims=True)


def _num_fine(parents: dict[str, np.ndarray]) -> int:
    return len(next(iter(parents.values())))


class Fuser:
    """The shared interface. A subclass sets `name`, the names of its constructor's
    hyperparameters, and how its fitted state reads from and writes to JSON."""

    name: str
    hyperparameter_names: tuple[str, ...] = ()

    def __init__(self, parents: dict[str, np.ndarray]):
        self.parents = parents

    def fit(self, probas_by_view: dict[str, np.ndarray], y: np.ndarray) -> "Fuser":
        raise NotImplementedError

    def predict_proba(self, probas_by_view: dict[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def summary(self) -> dict:
        """What the fit learned, in a form a person reads (and the logs print)."""
        raise NotImplementedError

    def _state(self) -> dict:
        raise NotImplementedError

    def _set_state(self, state: dict) -> None:
        raise NotImplementedError

    def to_record(self) -> dict:
        """The fitted fuser as JSON-able values; the view order fixes the order of array columns."""
        return {
            "views": list(self.parents),
            "hyperparameters": {name: getattr(self, name) for name in self.hyperparameter_names},
            "state": self._state(),
        }

    @classmethod
    def from_record(cls, record: dict, parents: dict[str, np.ndarray]) -> "Fuser":
        """The fuser `to_record` described, over the same views given in any order."""
        views = record["views"]
        if set(views) != set(parents):
            raise ValueError(f"the {cls.name} fusion was fitted on views {sorted(views)}, not {sorted(parents)}")
        fuser = cls({view: parents[view] for view in views}, **record["hyperparameters"])
        fuser._set_state(record["state"])
        return fuser


class ProductFusion(Fuser):
    """Hierarchical product with one learned exponent per view (a log-linear pool):
    p(fine) ∝ Π_v p_v(ancestor of fine)^w_v. The exponents minimise the validation log-loss within
    [0, max_exponent]: 0 ignores a view, 1 takes it at its word, above 1 sharpens a timid one."""

    name = "product"
    hyperparameter_names = ("max_exponent",)

    def __init__(self, parents: dict[str, np.ndarray], max_exponent: float = _MAX_EXPONENT):
        super().__init__(parents)
        self.max_exponent = max_exponent

    @_one_blas_thread
    def fit(self, probas_by_view: dict[str, np.ndarray], y: np.ndarray) -> "ProductFusion":
        logs = _log_scores(probas_by_view, self.parents)  # (V, N, F)
        rows = np.arange(len(y))

        def loss_and_grad(w: np.ndarray) -> tuple[float, np.ndarray]:
            proba = _softmax(np.tensordot(w, logs, axes=1))  # (N, F)
            loss = -np.mean(np.log(np.clip(proba[rows, y], _EPS, None)))
            # d loss / d w_v = mean over examples of E_p[log p_v] - log p_v(y)
            grad = np.einsum("nf,vnf->v", proba, logs) / len(y) - logs[:, rows, y].mean(axis=1)
            return float(loss), grad

        start = np.ones(len(self.parents))
        found = minimize(
            loss_and_grad, start, jac=True, method="L-BFGS-B", bounds=[(0.0, self.max_exponent)] * len(start)
        )
        self.weights_ = {view: float(w) for view, w in zip(self.parents, found.x)}
        return self

    def predict_proba(self, probas_by_view: dict[str, np.ndarray]) -> np.ndarray:
        logs = _log_scores(probas_by_view, self.parents)
        w = np.array([self.weights_[v] for v in self.parents])
        return _softmax(np.tensordot(w, logs, axes=1))

    def summary(self) -> dict:
        return {"exponents": self.weights_}

    def _state(self) -> dict:
        return {"exponents": self.weights_}

    def _set_state(self, state: dict) -> None:
        self.weights_ = {view: float(state["exponents"][view]) for view in self.parents}


class ConvexFusion(Fuser):
    """Linear pool p(fine) = Σ_v w_v p_v(fine), the weights on the simplex (a softmax of free
    parameters, found by L-BFGS) minimising the validation log-loss. A coarse view's ancestor
    probability is shared evenly among the ancestor's fine classes."""

    name = "convex"

    @_one_blas_thread
    def fit(self, probas_by_view: dict[str, np.ndarray], y: np.ndarray) -> "ConvexFusion":
        truth = _truth_probabilities(_fine_distributions(probas_by_view, self.parents), y)  # (N, V)

        def loss_and_grad(free: np.ndarray) -> tuple[float, np.ndarray]:
            w = _softmax(free)
            mixed = truth @ w  # (N,) the pool's probability of the truth
            grad_w = -(truth / mixed[:, None]).mean(axis=0)
            return float(-np.mean(np.log(mixed))), w * (grad_w - w @ grad_w)  # through the softmax

        found = minimize(
            loss_and_grad, np.zeros(len(self.parents)), jac=True, method="L-BFGS-B",
            options={"maxiter": _MAX_ITERATIONS, "gtol": 1e-8},
        )
        self.weights_ = {view: float(w) for view, w in zip(self.parents, _softmax(found.x))}
        return self

    def predict_proba(self, probas_by_view: dict[str, np.ndarray]) -> np.ndarray:
        w = np.array([self.weights_[v] for v in self.parents])
        return np.tensordot(w, _fine_distributions(probas_by_view, self.parents), axes=1)

    def summary(self) -> dict:
        return {"weights": self.weights_}

    def _state(self) -> dict:
        return {"weights": self.weights_}

    def _set_state(self, state: dict) -> None:
        self.weights_ = {view: float(state["weights"][view]) for view in self.parents}


class StackingFusion(Fuser):
    """A multinomial logistic regression (L2 penalty of strength 1/c) from every view's
    log-probabilities to the fine class. It can undo a view's miscalibration or systematic
    confusions, which a pool of the views' own probabilities cannot; it needs each fine class
    among the examples it is fitted on."""

    name = "stacking"
    hyperparameter_names = ("c",)

    def __init__(self, parents: dict[str, np.ndarray], c: float = 1.0):
        super().__init__(parents)
        self.c = c

    @_one_blas_thread
    def fit(self, probas_by_view: dict[str, np.ndarray], y: np.ndarray) -> "StackingFusion":
        from sklearn.linear_model import LogisticRegression  # ~1 s to import; only fitting needs it

        _check_views(probas_by_view, self.parents)
        absent = sorted(set(range(_num_fine(self.parents))) - set(np.unique(y).tolist()))
        if absent:
            raise ValueError(f"stacking needs examples of every fine class to fit on; classes {absent} have none")
        features = _log_features(probas_by_view, list(self.parents))
        model = LogisticRegression(C=self.c, max_iter=_MAX_ITERATIONS).fit(features, y)
        # C order, as a restored record has: the same sums in the same order, to the last bit
        self.coef_, self.intercept_ = np.ascontiguousarray(model.coef_), model.intercept_
        if len(model.classes_) == 2:  # one score z for class 1: the same as scores (-z/2, z/2)
            self.coef_ = np.vstack([-self.coef_ / 2, self.coef_ / 2])
            self.intercept_ = np.array([-self.intercept_[0] / 2, self.intercept_[0] / 2])
        return self

    def predict_proba(self, probas_by_view: dict[str, np.ndarray]) -> np.ndarray:
        _check_views(probas_by_view, self.parents)
        return _softmax(_log_features(probas_by_view, list(self.parents)) @ self.coef_.T + self.intercept_)

    def summary(self) -> dict:
        """Each view's share of the coefficients' absolute mass: how much the meta-learner reads it."""
        widths = [len(np.unique(parent)) for parent in self.parents.values()]
        mass = [block.sum() for block in np.split(np.abs(self.coef_), np.cumsum(widths)[:-1], axis=1)]
        return {"c": self.c, "coefficient_share": {v: float(m / sum(mass)) for v, m in zip(self.parents, mass)}}

    def _state(self) -> dict:
        return {"coef": self.coef_.tolist(), "intercept": self.intercept_.tolist()}

    def _set_state(self, state: dict) -> None:
        self.coef_, self.intercept_ = np.array(state["coef"]), np.array(state["intercept"])


class GatingFusion(Fuser):
    """Mixture of experts: p(fine | x) = Σ_v g_v(x) p_v(fine | x), the gate g a softmax over views
    of a small network (`hidden` tanh units, or linear with 0) that reads the example's view
    predictions: every view's log-probabilities, highest probability and entropy. It is fitted by
    L-BFGS on the validation log-loss plus `l2` times half the squared weights, from a seeded
    start at equal weights, so it can learn "view A where A knows this kind of example, B elsewhere"."""

    name = "gating"
    hyperparameter_names = ("hidden", "l2", "seed")

    def __init__(self, parents: dict[str, np.ndarray], hidden: int = 8, l2: float = 1e-3, seed: int = 0):
        super().__init__(parents)
        self.hidden, self.l2, self.seed = hidden, l2, seed

    def _gate_inputs(self, probas_by_view: dict[str, np.ndarray]) -> np.ndarray:
        _check_views(probas_by_view, self.parents)
        views = list(self.parents)
        return np.hstack([_log_features(probas_by_view, views), _confidence_features(probas_by_view, views)])

    def _shapes(self, inputs: int) -> dict[str, tuple[int, ...]]:
        views = len(self.parents)
        if self.hidden == 0:
            return {"w_out": (inputs, views), "b_out": (views,)}
        return {"w_in": (inputs, self.hidden), "b_in": (self.hidden,), "w_out": (self.hidden, views), "b_out": (views,)}

    def _hidden_units(self, params: dict[str, np.ndarray], z: np.ndarray) -> np.ndarray:
        return np.tanh(z @ params["w_in"] + params["b_in"]) if "w_in" in params else z

    def _gate(self, params: dict[str, np.ndarray], z: np.ndarray) -> np.ndarray:
        """(N, V) each example's weights over the views."""
        return _softmax(self._hidden_units(params, z) @ params["w_out"] + params["b_out"])

    def _initial_parameters(self, shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
        """Every weight 0 (equal weights for every example) but the hidden layer's, drawn small and
        seeded so that its units differ."""
        params = {name: np.zeros(shape) for name, shape in shapes.items()}
        if "w_in" in params:
            fan_in = shapes["w_in"][0]
            params["w_in"] = np.random.default_rng(self.seed).normal(0, 1 / np.sqrt(fan_in), shapes["w_in"])
        return params

    def _loss_and_grads(
        self, params: dict[str, np.ndarray], z: np.ndarray, truth: np.ndarray
    ) -> tuple[float, dict[str, np.ndarray]]:
        hidden = self._hidden_units(params, z)  # (N, H)
        gate = _softmax(hidden @ params["w_out"] + params["b_out"])  # (N, V)
        mixed = (gate * truth).sum(axis=1)  # (N,)
        weights = [name for name in params if name.startswith("w_")]
        loss = -np.mean(np.log(mixed)) + self.l2 / 2 * sum((params[name] ** 2).sum() for name in weights)
        d_scores = (gate - gate * truth / mixed[:, None]) / len(z)  # (N, V): gate minus posterior of each view
        grads = {"w_out": hidden.T @ d_scores, "b_out": d_scores.sum(axis=0)}
        if "w_in" in params:
            d_pre = (d_scores @ params["w_out"].T) * (1 - hidden**2)  # (N, H) through tanh
            grads.update(w_in=z.T @ d_pre, b_in=d_pre.sum(axis=0))
        for name in weights:
            grads[name] = grads[name] + self.l2 * params[name]
        return float(loss), grads

    @_one_blas_thread
    def fit(self, probas_by_view: dict[str, np.ndarray], y: np.ndarray) -> "GatingFusion":
        inputs = self._gate_inputs(probas_by_view)
        self.feature_mean_ = inputs.mean(axis=0)
        self.feature_scale_ = np.maximum(inputs.std(axis=0), 1e-6)  # a constant feature stays 0
        z = (inputs - self.feature_mean_) / self.feature_scale_
        truth = _truth_probabilities(_fine_distributions(probas_by_view, self.parents), y)
        shapes = self._shapes(z.shape[1])
        start = self._initial_parameters(shapes)

        def unpack(flat: np.ndarray) -> dict[str, np.ndarray]:
            sizes = np.cumsum([np.prod(shape) for shape in shapes.values()])[:-1]
            return {name: part.reshape(shape) for (name, shape), part in zip(shapes.items(), np.split(flat, sizes))}

        def loss_and_grad(flat: np.ndarray) -> tuple[float, np.ndarray]:
            loss, grads = self._loss_and_grads(unpack(flat), z, truth)
            return loss, np.concatenate([grads[name].ravel() for name in shapes])

        flat_start = np.concatenate([start[name].ravel() for name in shapes])
        found = minimize(loss_and_grad, flat_start, jac=True, method="L-BFGS-B", options={"maxiter": _MAX_ITERATIONS})
        self.params_ = unpack(found.x)
        self.mean_weights_ = {v: float(w) for v, w in zip(self.parents, self._gate(self.params_, z).mean(axis=0))}
        return self

    def gate_weights(self, probas_by_view: dict[str, np.ndarray]) -> np.ndarray:
        """(N, V) the weight each example gives each view."""
        z = (self._gate_inputs(probas_by_view) - self.feature_mean_) / self.feature_scale_
        return self._gate(self.params_, z)

    def predict_proba(self, probas_by_view: dict[str, np.ndarray]) -> np.ndarray:
        gate = self.gate_weights(probas_by_view)
        return np.einsum("nv,vnf->nf", gate, _fine_distributions(probas_by_view, self.parents))

    def summary(self) -> dict:
        """The gate's mean weight of each view over the examples it was fitted on."""
        return {"mean_gate_weights": self.mean_weights_}

    def _state(self) -> dict:
        return {
            "feature_mean": self.feature_mean_.tolist(),
            "feature_scale": self.feature_scale_.tolist(),
            "params": {name: value.tolist() for name, value in self.params_.items()},
            "mean_gate_weights": self.mean_weights_,
        }

    def _set_state(self, state: dict) -> None:
        self.feature_mean_ = np.array(state["feature_mean"])
        self.feature_scale_ = np.array(state["feature_scale"])
        self.params_ = {name: np.array(value) for name, value in state["params"].items()}
        self.mean_weights_ = {view: float(state["mean_gate_weights"][view]) for view in self.parents}


def _scaled(distribution: np.ndarray, exponent: float) -> np.ndarray:
    """p^exponent, renormalised: the same ranking of classes, another confidence."""
    return _softmax(exponent * np.log(np.clip(distribution, _EPS, None)))


def _fit_exponent(distribution: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """The exponent in [0, _MAX_EXPONENT] with the lowest log-loss, and that log-loss."""
    rows = np.arange(len(y))

    def loss(exponent: float) -> float:
        return float(-np.mean(np.log(np.clip(_scaled(distribution, exponent)[rows, y], _EPS, None))))

    found = minimize_scalar(loss, bounds=(0.0, _MAX_EXPONENT), method="bounded")
    return float(found.x), float(found.fun)


class BestViewFusion(Fuser):
    """The view whose probabilities of the fine classes (a coarse view's shared evenly, as in
    `convex`) have the lowest log-loss on the examples it is fitted on, each view first scaled by
    its own best exponent; that view is passed through alone, scaled so."""

    name = "best_view"

    def fit(self, probas_by_view: dict[str, np.ndarray], y: np.ndarray) -> "BestViewFusion":
        fitted = [_fit_exponent(distribution, y) for distribution in _fine_distributions(probas_by_view, self.parents)]
        best = int(np.argmin([loss for _, loss in fitted]))
        self.view_ = list(self.parents)[best]
        self.exponent_ = fitted[best][0]
        self.log_losses_ = {view: loss for view, (_, loss) in zip(self.parents, fitted)}
        return self

    def predict_proba(self, probas_by_view: dict[str, np.ndarray]) -> np.ndarray:
        distribution = _fine_distributions(probas_by_view, self.parents)[list(self.parents).index(self.view_)]
        return _scaled(distribution, self.exponent_)

    def summary(self) -> dict:
        return {"view": self.view_, "exponent": self.exponent_, "log_losses": self.log_losses_}

    def _state(self) -> dict:
        return self.summary()

    def _set_state(self, state: dict) -> None:
        self.view_ = state["view"]
        self.exponent_ = float(state.get("exponent", 1.0))  # records from before the exponent pass the view as it is
        self.log_losses_ = {view: float(state["log_losses"][view]) for view in self.parents}


STRATEGIES: dict[str, type[Fuser]] = {
    cls.name: cls for cls in (ProductFusion, ConvexFusion, StackingFusion, GatingFusion, BestViewFusion)
}


def _refined(proba: np.ndarray, specialist: np.ndarray, classes: np.ndarray, weight: float) -> np.ndarray:
    """`proba` with the probability it gives `classes` in all kept, and shared out among them
    by p^(1 - weight) * q^weight renormalised, q being the specialist's."""
    out = proba.copy()
    group = np.clip(proba[:, classes], _EPS, None)
    pooled = _softmax((1 - weight) * np.log(group) + weight * np.log(np.clip(specialist[:, classes], _EPS, None)))
    out[:, classes] = group.sum(axis=1, keepdims=True) * pooled
    return out


class RefinedFusion(Fuser):
    """A fusion of the views that answer every class, then refined by the specialist views (a
    view's `classes:`), one after the other: within a specialist's classes, the fused
    probability of the group stays, and how it is shared out among them pools the fusion's and
    the specialist's by one fitted weight in [0, 1] (0 ignores the specialist, 1 takes its
    word). A specialist learned only from its classes' examples: it says nothing on whether an
    example is one of them, so it is never asked."""

    def __init__(self, base: Fuser, specialists: dict[str, np.ndarray], parents: dict[str, np.ndarray]):
        super().__init__(parents)
        self.base, self.specialists = base, specialists

    @property
    def name(self) -> str:
        return self.base.name

    def _base_probas(self, probas_by_view: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {view: probas_by_view[view] for view in self.base.parents}

    @_one_blas_thread
    def fit(self, probas_by_view: dict[str, np.ndarray], y: np.ndarray) -> "RefinedFusion":
        _check_views(probas_by_view, self.parents)
        proba = self.base.fit(self._base_probas(probas_by_view), y).predict_proba(self._base_probas(probas_by_view))
        rows, self.weights_ = np.arange(len(y)), {}
        for view, classes in self.specialists.items():

            def loss(weight: float, view: str = view, classes: np.ndarray = classes) -> float:
                refined = _refined(proba, probas_by_view[view], classes, weight)
                return float(-np.mean(np.log(np.clip(refined[rows, y], _EPS, None))))

            self.weights_[view] = float(minimize_scalar(loss, bounds=(0.0, 1.0), method="bounded").x)
            proba = _refined(proba, probas_by_view[view], classes, self.weights_[view])
        return self

    def predict_proba(self, probas_by_view: dict[str, np.ndarray]) -> np.ndarray:
        _check_views(probas_by_view, self.parents)
        proba = self.base.predict_proba(self._base_probas(probas_by_view))
        for view, classes in self.specialists.items():
            proba = _refined(proba, probas_by_view[view], classes, self.weights_[view])
        return proba

    def _specialist_entries(self) -> dict:
        return {view: {"classes": classes.tolist(), "weight": self.weights_[view]} for view, classes in self.specialists.items()}

    def summary(self) -> dict:
        return self.base.summary() | {"specialists": self._specialist_entries()}

    def to_record(self) -> dict:
        return {"base": self.base.to_record(), "specialists": self._specialist_entries()}

    @classmethod
    def restore(cls, strategy: type[Fuser], record: dict, parents: dict[str, np.ndarray]) -> "RefinedFusion":
        specialists = {view: np.array(entry["classes"], dtype=np.int64) for view, entry in record["specialists"].items()}
        missing = sorted(set(specialists) - set(parents))
        if missing:
            raise ValueError(f"the fusion is refined by specialist view(s) {missing}, which the model lacks")
        base = strategy.from_record(record["base"], {v: p for v, p in parents.items() if v not in specialists})
        fuser = cls(base, specialists, parents)
        fuser.weights_ = {view: float(entry["weight"]) for view, entry in record["specialists"].items()}
        return fuser


def build_fuser(
    strategy: str, parents: dict[str, np.ndarray], settings: FusionConfig, specialists: dict[str, np.ndarray] | None = None,
) -> Fuser:
    """An unfitted fuser of the named strategy with its hyperparameters from `settings`, over the
    views that answer every class; refined by the `specialists` (view -> fine class ids) where
    there are any."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown fusion strategy {strategy!r}; choose from {sorted(STRATEGIES)} or 'auto'")
    hyperparameters = {
        "stacking": {"c": settings.stacking.c},
        "gating": {"hidden": settings.gating.hidden, "l2": settings.gating.l2, "seed": settings.gating.seed},
    }
    specialists = specialists or {}
    base_parents = {view: parent for view, parent in parents.items() if view not in specialists}
    base = STRATEGIES[strategy](base_parents, **hyperparameters.get(strategy, {}))
    return RefinedFusion(base, specialists, parents) if specialists else base


def _rows(probas_by_view: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, np.ndarray]:
    return {view: proba[rows] for view, proba in probas_by_view.items()}


def held_out_proba(
    make_fuser: Callable[[], Fuser], num_fine: int, probas_by_view: dict[str, np.ndarray], y: np.ndarray,
    folds: np.ndarray,
) -> np.ndarray:
    """Out-of-fold fused probabilities: each fold predicted by a fuser fitted on the other folds,
    so no validation example is predicted by a fuser that saw it."""
    held_out = np.zeros((len(y), num_fine))
    for fold in np.unique(folds):
        scored = folds == fold
        fuser = make_fuser().fit(_rows(probas_by_view, ~scored), y[~scored])
        held_out[scored] = fuser.predict_proba(_rows(probas_by_view, scored))
    return held_out


def cross_fitted_scores(
    make_fuser: Callable[[], Fuser], num_fine: int, probas_by_view: dict[str, np.ndarray], y: np.ndarray,
    folds: np.ndarray, metric: str = "accuracy",
) -> dict[str, float]:
    """Log-loss and accuracy of the out-of-fold predictions (held_out_proba), and `metric`."""
    held_out = held_out_proba(make_fuser, num_fine, probas_by_view, y, folds)
    scores = {"log_loss": log_loss(held_out, y), "accuracy": float((held_out.argmax(axis=1) == y).mean())}
    if metric != "accuracy":
        scores[metric] = _metric(metric, held_out, y)
    return scores


def _metric(metric: str, proba: np.ndarray, y: np.ndarray) -> float:
    """A class metric of promotion.metric (balanced_accuracy, macro_f1, roc_auc, pr_auc) of
    probabilities, their most probable class taken as the answer."""
    if metric in ("roc_auc", "pr_auc"):
        return ranking_metrics(y, proba)[metric]
    return classification_metrics(y, proba)[metric]


def _selection(scores: dict[str, dict[str, float]], folds: int, metric: str = "accuracy") -> dict:
    """The winner by cross-fitted log-loss among the candidates at least as good (cross-fitted) in
    `metric` (promotion.metric: the one a user reads) as `best_view` where it is one, the
    runner-up among those, and the margin between them. The guard keeps a combination that is
    better calibrated but worse in that metric than the best view alone from being picked:
    log-loss rewards calibration, a user reads the metric."""
    floor = scores["best_view"][metric] if "best_view" in scores else None
    left_out = sorted(name for name in scores if floor is not None and scores[name][metric] < floor)
    ranked = sorted((name for name in scores if name not in left_out), key=lambda name: scores[name]["log_loss"])
    winner, runner_up = ranked[0], (ranked[1] if len(ranked) > 1 else None)
    margin = scores[runner_up]["log_loss"] - scores[winner]["log_loss"] if runner_up else None
    reason = f"{winner}: cross-fitted validation log-loss {scores[winner]['log_loss']:.4f} over {folds} folds"
    reason += f", {margin:.4f} below {runner_up}" if runner_up else " (the only candidate left)"
    worse = "less accurate than" if metric == "accuracy" else f"lower in {metric} than"
    if left_out:
        reason += f"; left out, {worse} best_view ({floor:.4f}): " + ", ".join(
            f"{name} ({scores[name][metric]:.4f})" for name in left_out
        )
    return {
        "rule": f"lowest cross-fitted validation log-loss among the candidates at least as good in {metric} as best_view",
        "folds": folds, "metric": metric, "scores": scores, "left_out": left_out,
        "winner": winner, "runner_up": runner_up, "margin": margin, "reason": reason,
    }


def choose_fusion(
    settings: FusionConfig, parents: dict[str, np.ndarray], probas_by_view: dict[str, np.ndarray], y: np.ndarray,
    folds: np.ndarray, specialists: dict[str, np.ndarray] | None = None, metric: str = "accuracy",
) -> tuple[Fuser, dict]:
    """Fit `settings.strategy`, or with 'auto' the candidate whose cross-fitted validation log-loss
    is lowest among those at least as good in `metric` as the best view alone (see _selection), each
    refined by the `specialists` where there are any. Return the fuser, fitted on every fold,
    and its record (fusion.json): the strategy, a readable summary, the fitted state, and every
    candidate's scores with the reason for the pick."""
    candidates = list(settings.candidates) if settings.strategy == "auto" else [settings.strategy]
    if len(folds) != len(y) or len(np.unique(folds)) < 2:
        raise ValueError(f"cross-fitting needs a fold for each of the {len(y)} examples, and two folds or more")
    scores = {
        name: cross_fitted_scores(
            partial(build_fuser, name, parents, settings, specialists), _num_fine(parents), probas_by_view, y, folds,
            metric,
        )
        for name in candidates
    }
    selection = _selection(scores, folds=len(np.unique(folds)), metric=metric)
    fuser = build_fuser(selection["winner"], parents, settings, specialists).fit(probas_by_view, y)
    record = {"strategy": fuser.name, "summary": fuser.summary(), "fuser": fuser.to_record(), "selection": selection}
    return fuser, record


def pass_through_record(view: str, parent: np.ndarray) -> dict:
    """The record (fusion.json) of a bundle whose one view predicts fine classes: a product with
    exponent 1, which passes the view's probabilities through unchanged."""
    fuser = ProductFusion({view: parent}, max_exponent=1.0)
    fuser._set_state({"exponents": {view: 1.0}})
    return {"strategy": fuser.name, "summary": fuser.summary(), "fuser": fuser.to_record()}


def restore_fusion(record: dict, parents: dict[str, np.ndarray]) -> Fuser:
    """The fitted fuser a record of choose_fusion (fusion.json) describes, with no refitting."""
    strategy = record.get("strategy")
    if strategy not in STRATEGIES:
        raise ValueError(f"fusion record names strategy {strategy!r}; known strategies are {sorted(STRATEGIES)}")
    if "fuser" not in record:
        raise ValueError(
            "fusion record holds no fitted state ('fuser'); it predates this version: run the fuse step again"
        )
    if "specialists" in record["fuser"]:
        return RefinedFusion.restore(STRATEGIES[strategy], record["fuser"], parents)
    return STRATEGIES[strategy].from_record(record["fuser"], parents)
