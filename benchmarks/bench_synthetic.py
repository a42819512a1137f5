"""How hard the built-in Synthetic dataset is, at each difficulty: chance, untrained, linear.

For each difficulty (and seed) it generates a Synthetic dataset into a temporary folder, timing
the generation, and scores the test split (query against gallery, Market-1501 protocol, cosine
distance) with three feature extractors that learn nothing or only linearly:

- chance: random features;
- untrained: resnet18 with random weights, global average pooling of the last stage;
- linear: colour histograms of three horizontal bands plus 16x8 pixels, PCA then LDA fitted on
  the training split (scikit-learn);
- with ``--small_cnn_epochs N`` also a plain learner: an 8-layer CNN at 64x32 trained with a
  softmax over the training identities (horizontal flips only) for N epochs, to show that what
  the linear method misses can be learned.

A dataset on which the untrained network scores near chance and the linear method far below 1
is one on which a recipe must really learn to do well.

    python benchmarks/bench_synthetic.py --difficulties 0,1,2 --seeds 0
"""

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis  # noqa: E402

import applications.core.backend  # noqa: E402, F401  (selects legacy Keras before TensorFlow loads)
from applications.core.backend import tf  # noqa: E402
from datasets import load_dataset  # noqa: E402
from evaluation.metrics import evaluate_ranking  # noqa: E402


def read_images(records):
    """uint8 RGB (N, H, W, 3) images of a split, in record order."""
    return np.stack(
        [cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB) for path in records["image_file_path"]]
    )


def linear_features(images):
    """Per-band colour histograms (3 bands x 3 channels x 8 bins) and 16x8 pixels, float32."""
    features = []
    for image in images:
        bands = np.array_split(image, 3, axis=0)
        histograms = [
            np.histogram(band[..., channel], bins=8, range=(0, 256))[0] / band[..., 0].size
            for band in bands
            for channel in range(3)
        ]
        pixels = cv2.resize(image, (8, 16), interpolation=cv2.INTER_AREA).ravel() / 255.0
        features.append(np.concatenate([np.concatenate(histograms), pixels]))
    return np.asarray(features, np.float32)


def build_untrained_resnet18(image_height, image_width):
    """tf2cv resnet18 with random weights, its final 7x7 pool replaced by global averaging."""
    from tf2cv.model_provider import get_model

    model = get_model("resnet18", pretrained=False, data_format="channels_last")
    inputs = tf.keras.Input((image_height, image_width, 3))
    x = (inputs - 127.5) / 64.0
    for child in model.features.children[:-1]:
        x = child(x)
    return tf.keras.Model(inputs, tf.reduce_mean(x, axis=[1, 2]))


def train_small_cnn(train_images, train_labels, num_epochs, seed):
    """A plain 8-layer CNN trained with softmax on 64x32 images; returns its embedding model."""
    keras = tf.keras
    layers = keras.layers
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((64, 32, 3))
    x = layers.RandomFlip("horizontal")(layers.Rescaling(1 / 127.5, -1)(inputs))
    for filters in (32, 64, 128, 256):
        for _ in range(2):
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
            x = layers.ReLU()(layers.BatchNormalization()(x))
        x = layers.MaxPool2D()(x)
    features = layers.GlobalAveragePooling2D()(x)
    logits = layers.Dense(int(train_labels.max()) + 1)(layers.BatchNormalization()(features))
    classifier = keras.Model(inputs, logits)
    classifier.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    classifier.fit(shrink(train_images), train_labels, batch_size=64, epochs=num_epochs, verbose=0)
    return keras.Model(inputs, features)


def shrink(images):
    """uint8 (N, 128, 64, 3) -> (N, 64, 32, 3), area interpolation."""
    return np.stack([cv2.resize(image, (32, 64), interpolation=cv2.INTER_AREA) for image in images])


def cosine_distances(query_features, gallery_features):
    query_features = query_features / np.linalg.norm(query_features, axis=1, keepdims=True)
    gallery_features = gallery_features / np.linalg.norm(gallery_features, axis=1, keepdims=True)
    return 1.0 - query_features @ gallery_features.T


def score(query_features, gallery_features, query, gallery):
    result = evaluate_ranking(
        cosine_distances(query_features, gallery_features),
        query["identity_ID"].to_numpy(),
        gallery["identity_ID"].to_numpy(),
        query["camera_ID"].to_numpy(),
        gallery["camera_ID"].to_numpy(),
    )
    return result.mAP, result.cmc[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--difficulties", default="0,0.5,1,1.5", help="comma-separated")
    parser.add_argument("--seeds", default="0", help="comma-separated dataset seeds")
    parser.add_argument("--num_identities", type=int, default=200)
    parser.add_argument("--num_images_per_identity", type=int, default=12)
    parser.add_argument("--twin_fraction", type=float, default=0.3)
    parser.add_argument(
        "--small_cnn_epochs", type=int, default=0, help="also train a small CNN (0: skip)"
    )
    arguments = parser.parse_args()
    network = build_untrained_resnet18(128, 64)
    print(
        f"Synthetic, {arguments.num_identities} identities (half for testing), "
        f"{arguments.num_images_per_identity} images each, 128x64, twin fraction "
        f"{arguments.twin_fraction}; mAP / rank-1 on the test split; {os.cpu_count()} CPUs"
    )
    header = (
        f"{'difficulty':>10s}{'seed':>6s}{'generate s':>12s}"
        f"{'chance':>16s}{'untrained r18':>16s}{'linear':>16s}"
        + (f"{f'CNN {arguments.small_cnn_epochs} ep':>16s}" if arguments.small_cnn_epochs else "")
    )
    print(header)
    print("-" * len(header))
    for difficulty in [float(value) for value in arguments.difficulties.split(",")]:
        for seed in [int(value) for value in arguments.seeds.split(",")]:
            with tempfile.TemporaryDirectory() as folder_path:
                options = dict(
                    num_identities=arguments.num_identities,
                    num_images_per_identity=arguments.num_images_per_identity,
                    difficulty=difficulty,
                    twin_fraction=arguments.twin_fraction,
                    seed=seed,
                )
                start = time.perf_counter()
                dataset = load_dataset("Synthetic", folder_path, synthetic_options=options)
                generation_seconds = time.perf_counter() - start
                train, query, gallery = (
                    read_images(dataset.train),
                    read_images(dataset.query),
                    read_images(dataset.gallery),
                )
            rng = np.random.default_rng(seed)
            chance = score(
                rng.normal(size=(len(query), 64)),
                rng.normal(size=(len(gallery), 64)),
                dataset.query,
                dataset.gallery,
            )
            untrained = score(
                network.predict(query, verbose=0),
                network.predict(gallery, verbose=0),
                dataset.query,
                dataset.gallery,
            )
            train_features = linear_features(train)
            pca = PCA(n_components=min(128, len(train) - 1), random_state=0).fit(train_features)
            lda = LinearDiscriminantAnalysis().fit(
                pca.transform(train_features), dataset.train["identity_ID"].to_numpy()
            )
            query_projected, gallery_projected = (
                lda.transform(pca.transform(linear_features(images))) for images in (query, gallery)
            )
            linear = score(query_projected, gallery_projected, dataset.query, dataset.gallery)
            results = [chance, untrained, linear]
            if arguments.small_cnn_epochs:
                labels = dataset.label_encoder.transform(dataset.train["identity_ID"])
                embed = train_small_cnn(train, labels, arguments.small_cnn_epochs, seed)
                results.append(
                    score(
                        embed.predict(shrink(query), verbose=0),
                        embed.predict(shrink(gallery), verbose=0),
                        dataset.query,
                        dataset.gallery,
                    )
                )
            cells = "".join(f"{m:>9.3f} /{r:>5.2f}" for m, r in results)
            print(f"{difficulty:>10g}{seed:>6d}{generation_seconds:>12.1f}{cells}")


if __name__ == "__main__":
    main()
