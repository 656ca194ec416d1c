"""Four pictures of models trained on Parquet: k-means elbow, PCA scree, packed models, loss per epoch.

The data is scikit-learn's handwritten digits (1,797 images of 8 x 8 pixels), written
to Parquet first. Every picture comes from the fitted states: drawing reads no data.
Needs the plot extra: pip install 'daskstate[plot]'.

Run: python examples/plot_example.py   (writes daskstate-pictures.png to the system's temporary folder)
"""

import os
import tempfile

import matplotlib

matplotlib.use("Agg")  # write a file; no window needed
import matplotlib.pyplot as plt  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

import daskstate  # noqa: E402
import daskstate.plot  # noqa: E402

digits = load_digits(as_frame=True).frame.rename(columns={"target": "digit"})
pixels = [c for c in digits.columns if c != "digit"]
digits[pixels] = digits[pixels].astype("float64")

with tempfile.TemporaryDirectory() as folder:
    digits.to_parquet(f"{folder}/digits.parquet", row_group_size=200)
    data = daskstate.read_parquet(folder)

    kmeans = daskstate.KMeans(10, k_max=20, features=pixels, random_state=0).fit(data)
    pca = daskstate.PCA(10, max_components=20, mode="randomized", features=pixels).fit(data)
    clf = daskstate.LinearLearner("multiclass_classifier", target="digit", features=pixels,
                                  num_models=8, epochs=8).fit(data)

    fig, axes = plt.subplots(2, 2, figsize=(11, 8), layout="constrained")
    daskstate.plot.elbow(kmeans, ax=axes[0, 0])            # cost for k = 1..20 from one state
    daskstate.plot.scree(pca, n_components=20, ax=axes[0, 1])  # with the sketch's error band
    daskstate.plot.packed_models(clf, ax=axes[1, 0])       # validation accuracy of each packed model
    daskstate.plot.loss_curve(clf, ax=axes[1, 1])          # validation loss per epoch
    out = os.path.join(tempfile.gettempdir(), "daskstate-pictures.png")
    fig.savefig(out, dpi=100)
    print(f"k-means cost at k=10: {kmeans.state_.cost_curve([10])[0]:.4g}; "
          f"PCA bound: {pca.explained_variance_bound_:.3g}; "
          f"model {clf.model_} of {len(clf.models_)} in use, accuracy {clf.models_['accuracy'].max():.3f}")
    print(f"wrote {out}")
