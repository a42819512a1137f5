"""Pictures of a model's ranking on the test set: ranked lists and the CMC curve of a run.

Embeds the query and gallery images (as evaluation does), computes their distances and hands
them to `evaluation.visualization`, which draws without TensorFlow.
"""

from applications.embedding import embedding_model
from applications.model_evaluation import extract_features
from evaluation.distances import compute_distance_matrix
from evaluation.visualization import write_evaluation_pictures


def write_result_pictures(
    inference_model,
    query,
    gallery,
    output_folder_path,
    *,
    visualize_ranked_lists,
    image_height,
    image_width,
    testing_batch_size=64,
    use_horizontal_flipping_in_evaluation=True,
    distance_metric="cosine",
    cmc_config="market1501",
    label="this run",
):
    """Writes cmc_curve.csv, cmc_curve.png and ranked_lists/*.png into a run folder.

    Args:
        inference_model: keras model, uint8 images (B, H, W, 3) -> float32 (B, D).
        query: pandas DataFrame with image_file_path, identity_ID and camera_ID columns.
        gallery: pandas DataFrame with the same columns.
        output_folder_path: str, the run folder.
        visualize_ranked_lists: int, number of queries whose ranked lists are drawn.
        image_height: int, model input height.
        image_width: int, model input width.
        testing_batch_size: int, images per forward pass.
        use_horizontal_flipping_in_evaluation: bool, flip averaging of the embeddings.
        distance_metric: str, see evaluation.distances.
        cmc_config: str, the CMC protocol (also decides which images are junk).
        label: str, the CMC curve's legend label.

    Returns:
        dict from evaluation.visualization.write_evaluation_pictures.
    """

    inference_model = embedding_model(inference_model)

    def embed(split):
        # Undecodable images are left out (the evaluation counted them), keeping rows aligned.
        features, positions = extract_features(
            inference_model,
            split["image_file_path"],
            image_height=image_height,
            image_width=image_width,
            batch_size=testing_batch_size,
            use_horizontal_flipping=use_horizontal_flipping_in_evaluation,
            verbose=0,
            return_positions=True,
        )
        return features, split.iloc[positions]

    query_features, query = embed(query)
    gallery_features, gallery = embed(gallery)
    distmat = compute_distance_matrix(query_features, gallery_features, metric=distance_metric)
    return write_evaluation_pictures(
        distmat,
        query["image_file_path"].to_numpy(dtype=str),
        gallery["image_file_path"].to_numpy(dtype=str),
        query["identity_ID"].to_numpy(),
        gallery["identity_ID"].to_numpy(),
        query["camera_ID"].to_numpy(),
        gallery["camera_ID"].to_numpy(),
        output_folder_path,
        num_ranked_lists=visualize_ranked_lists,
        cmc_config=cmc_config,
        label=label,
    )
