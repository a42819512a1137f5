"""The branch network: trunk, global branch and regional stripe branches, and the inference model.

images (B, H, W, 3) in [0, 255] -> ImageNet normalisation -> trunk (init block, stages 1-3);
global branch: its own copy of stage 4 -> pooling -> optional clipping; regional branch: another
copy of stage 4 cut into `region_num` horizontal stripes, each -> 3x3 conv (C4 / region_num
filters) + ReLU -> pooling -> optional clipping.
"""

from applications.core.backend import keras
from applications.layers import (
    FeatureClipping,
    ImageNormalization,
    build_pooling_layer,
    use_matmul_filter_gradients,
)

# Name of the local branch's output layer (AlignedReID's stripe features, (B, H, C_local)).
LOCAL_FEATURES_NAME = "local_features"


def as_output_list(outputs):
    """Returns a model's outputs as a list: a Keras model with one output returns a bare tensor."""
    if isinstance(outputs, (list, tuple)):
        return list(outputs)
    return [outputs]


def build_branch_network(
    backbone,
    image_height,
    image_width,
    region_num,
    pooling_mode,
    min_value,
    max_value,
    gem_initial_power,
    use_local_branch=False,
    local_feature_dim=128,
):
    """Builds images (B, H, W, 3) -> list of float32 branch embeddings [(B, D_b), ...].

    With use_local_branch, one more output comes last: AlignedReID's local features
    (B, H_map, local_feature_dim) from the global branch's feature map (see
    build_local_features).
    """
    images = keras.Input(shape=(image_height, image_width, 3), name="images")
    features = ImageNormalization(name="image_normalization")(images)
    features = backbone.trunk(features)

    def pool_and_clip(feature_map, branch_name):
        embedding = build_pooling_layer(
            pooling_mode, name=branch_name + "_pooling", gem_initial_power=gem_initial_power
        )(feature_map)
        if min_value is not None or max_value is not None:
            embedding = FeatureClipping(min_value, max_value, name=branch_name + "_clipping")(
                embedding
            )
        return embedding

    global_feature_map = backbone.build_last_stage_copy("last_stage_global")(features)
    branch_embeddings = [pool_and_clip(global_feature_map, "global")]
    if region_num > 0:
        regional_feature_map = backbone.build_last_stage_copy("last_stage_regional")(features)
        for branch_name, stripe in _regional_stripes(
            regional_feature_map, region_num, image_height
        ):
            branch_embeddings.append(pool_and_clip(stripe, branch_name))

    if use_local_branch:
        branch_embeddings.append(build_local_features(global_feature_map, local_feature_dim))
    branch_network = keras.Model(images, branch_embeddings, name="branch_network")
    # Under mixed_bfloat16: a faster kernel gradient on the last stages' small maps.
    use_matmul_filter_gradients(branch_network)
    return branch_network


def _regional_stripes(regional_feature_map, region_num, image_height):
    """Yields (branch name, stripe) per region: a horizontal cut of the map, 3x3 conv + ReLU.

    The stripes split the map's height evenly; the last one takes the rows an uneven split
    leaves over. Each convolution has C / region_num filters.
    """
    total_height, _, num_channels = regional_feature_map.shape[1:]
    region_size = total_height // region_num
    if region_size == 0:
        raise ValueError(
            f"region_num={region_num} exceeds the height {total_height} of the last feature "
            f"map at image_height={image_height}; use a taller image or fewer regions."
        )
    for region_index in range(region_num):
        start_index = region_index * region_size
        end_index = total_height if region_index == region_num - 1 else start_index + region_size
        branch_name = branch_names(region_num)[region_index + 1]
        stripe = keras.layers.Cropping2D(
            cropping=((start_index, total_height - end_index), (0, 0)),
            name=branch_name + "_stripe",
        )(regional_feature_map)
        stripe = keras.layers.Conv2D(
            filters=num_channels // region_num,
            kernel_size=3,
            padding="same",
            activation="relu",
            name=branch_name + "_reduction",
        )(stripe)
        yield branch_name, stripe


def build_local_features(feature_map, local_feature_dim):
    """AlignedReID's local branch: one feature per row of the feature map.

    Mean over the width, then a 1x1 convolution with bias, batch normalisation and ReLU.

    Args:
        feature_map: tensor (B, H_map, W_map, C).
        local_feature_dim: int, channels per stripe (AlignedReID: 128).

    Returns:
        float32 tensor (B, H_map, local_feature_dim), named LOCAL_FEATURES_NAME.
    """
    if local_feature_dim < 1:
        raise ValueError(f"local_feature_dim must be at least 1, got {local_feature_dim}.")
    map_height, map_width = feature_map.shape[1], feature_map.shape[2]
    rows = keras.layers.AveragePooling2D(pool_size=(1, map_width), name="local_row_mean")(
        feature_map
    )
    rows = keras.layers.Conv2D(local_feature_dim, 1, use_bias=True, name="local_reduction")(rows)
    rows = keras.layers.BatchNormalization(name="local_batch_normalization")(rows)
    rows = keras.layers.ReLU(name="local_relu")(rows)
    return keras.layers.Reshape(
        (map_height, local_feature_dim), dtype="float32", name=LOCAL_FEATURES_NAME
    )(rows)


def has_local_branch(branch_network):
    """Tells whether the branch network's last output is the local branch's."""
    return branch_network.output_names[-1] == LOCAL_FEATURES_NAME


def embedding_outputs(branch_network):
    """The branch embedding outputs [(B, D_b), ...], without the local features."""
    if has_local_branch(branch_network):
        return branch_network.outputs[:-1]
    return branch_network.outputs


def branch_names(region_num):
    return ["global"] + [f"region{index + 1}" for index in range(region_num)]


def build_inference_model(branch_network):
    """Builds images (B, H, W, 3) -> float32 concatenated branch embeddings (B, D).

    With the local branch the model has a second output, the local features
    (B, H_map, C_local); without it, the single output above.
    """
    outputs = embedding_outputs(branch_network)
    if len(outputs) == 1:
        embedding = FeatureClipping(name="embedding")(outputs[0])
    else:
        embedding = keras.layers.Concatenate(axis=-1, dtype="float32", name="embedding")(outputs)
    if has_local_branch(branch_network):
        embedding = [embedding, branch_network.outputs[-1]]
    return keras.Model(branch_network.inputs, embedding, name="inference_model")
