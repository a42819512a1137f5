"""The FlipReID model: a multi-branch embedding network and its flip-averaging training model.

Structure (Ni & Rahtu, FlipReID):
- images (B, H, W, 3) in [0, 255] -> ImageNet normalisation -> trunk (init block, stages 1-3);
- global branch: its own copy of stage 4 -> pooling -> optional clipping;
- regional branch: another copy of stage 4, whose feature map is cut into `region_num`
  horizontal stripes; each stripe -> 3x3 conv (C4 / region_num filters) + ReLU -> pooling ->
  optional clipping;
- one classification head per branch: BatchNormalization neck -> Dense softmax without bias
  (or AlignedReID's Dense layer with bias on the raw embedding, identity_head="linear").
The training model runs every image and its horizontal flip through the same branch network,
averages the two embeddings of each branch for the triplet and identity losses, and adds the
mean squared error between them as the flipping loss.
"""

from applications.backbones import build_backbone
from applications.branches import branch_names, build_branch_network, build_inference_model
from applications.heads import build_classification_heads
from applications.training_model import LOGGED_NAMES, FlipReIDTrainingModel
from applications.weights import load_model_weights

__all__ = ["LOGGED_NAMES", "FlipReIDTrainingModel", "build_flipreid_models", "load_model_weights"]


def build_flipreid_models(
    backbone_name,
    image_height,
    image_width,
    num_identities,
    *,
    region_num=2,
    pooling_mode="GeM",
    gem_initial_power=3.0,
    min_value=None,
    max_value=None,
    use_horizontal_flipping_inside_model=True,
    pretrained=False,
    pretrained_root=None,
    last_stride=1,
    kernel_regularization_factor=0.0,
    bias_regularization_factor=0.0,
    gamma_regularization_factor=0.0,
    beta_regularization_factor=0.0,
    use_local_branch=False,
    local_feature_dim=128,
    flip_batch_norm_mode="shared",
    identity_head="bn_neck",
):
    """Builds the FlipReID training model and the inference model that shares its weights.

    Args:
        backbone_name: "resnet18", "resnet50", "ibn_resnet50" or "resnesta50".
        image_height: input height in pixels.
        image_width: input width in pixels.
        num_identities: number of training identities (softmax classes).
        region_num: number of horizontal stripes of the regional branch (0: global only).
        pooling_mode: "Average", "Max" or "GeM".
        gem_initial_power: starting value of GeM's trainable power p (FlipReID: 1.0).
        min_value: lower clip of every branch embedding (None: no lower clip). FlipReID's
            flags default to 0.0.
        max_value: upper clip of every branch embedding (None: no upper clip). FlipReID's
            flags default to 1.0.
        use_horizontal_flipping_inside_model: train on the average of the embeddings of each
            image and its flip, plus the flipping loss (the FlipReID structure).
        pretrained: start the backbone from tf2cv's ImageNet weights.
        pretrained_root: folder of tf2cv's weight cache (None: ~/.tensorflow/models).
        last_stride: stride of stage 4's first unit: 1 as in FlipReID (feature map 1/16 of the
            input), or 2 as in pip tf2cv and ImageNet classifiers (1/32). Weights are the same.
        kernel_regularization_factor: L2 factor of kernels (0: none, as the default
            --regularization_mode none; FlipReID: 5e-4 for all four factors).
        bias_regularization_factor: L2 factor of biases.
        gamma_regularization_factor: L2 factor of normalization scales.
        beta_regularization_factor: L2 factor of normalization offsets.
        use_local_branch: add AlignedReID's local branch on the global branch's feature map
            (mean over the width, 1x1 convolution with bias, batch normalisation, ReLU).
        local_feature_dim: channels of each local stripe feature (AlignedReID: 128).
        flip_batch_norm_mode: with the flip structure in training, "shared" batch-norm
            statistics over one doubled batch of the images and their flips, or "separate"
            statistics per pass, as FlipReID's two calls of its inference model (see
            FlipReIDTrainingModel). Changes no weight.
        identity_head: "bn_neck" (FlipReID's BN neck and bias-free softmax layer) or "linear"
            (AlignedReID's linear layer with bias on the raw embedding); see applications.heads.

    Returns:
        (training_model, inference_model). inference_model maps images (B, H, W, 3) uint8 or
        float in [0, 255] to the float32 embedding (B, D): the concatenation, in the order
        global, region1, ..., of the branch embeddings, not L2-normalised (compare them with
        the cosine distance). training_model is a FlipReIDTrainingModel, not yet compiled; its
        `branch_network` maps the same images to the list of branch embeddings. With
        use_local_branch, inference_model has a second output, the local features float32
        (B, H_map, local_feature_dim), and branch_network lists them after the embeddings.

    Raises:
        ValueError: unknown backbone or pooling mode, or invalid sizes.
        RuntimeError: pretrained weights are neither cached nor downloadable.
    """
    _check_sizes(num_identities, region_num)
    branch_network = _build_branch_network(
        backbone_name,
        image_height,
        image_width,
        region_num=region_num,
        pooling_mode=pooling_mode,
        min_value=min_value,
        max_value=max_value,
        gem_initial_power=gem_initial_power,
        use_local_branch=use_local_branch,
        local_feature_dim=local_feature_dim,
        pretrained=pretrained,
        pretrained_root=pretrained_root,
        last_stride=last_stride,
    )
    training_model = _build_training_model(
        branch_network,
        num_identities,
        region_num=region_num,
        identity_head=identity_head,
        use_horizontal_flipping_inside_model=use_horizontal_flipping_inside_model,
        kernel_regularization_factor=kernel_regularization_factor,
        bias_regularization_factor=bias_regularization_factor,
        gamma_regularization_factor=gamma_regularization_factor,
        beta_regularization_factor=beta_regularization_factor,
        flip_batch_norm_mode=flip_batch_norm_mode,
    )
    return training_model, build_inference_model(branch_network)


def _check_sizes(num_identities, region_num):
    if num_identities < 2:
        raise ValueError(f"num_identities must be at least 2, got {num_identities}.")
    if region_num < 0:
        raise ValueError(f"region_num must be non-negative, got {region_num}.")


def _build_branch_network(
    backbone_name, image_height, image_width, *, pretrained, pretrained_root, last_stride, **options
):
    """The backbone, then the branch network on it.

    Args:
        backbone_name, image_height, image_width, pretrained, pretrained_root, last_stride: as
            in build_flipreid_models, for applications.backbones.build_backbone.
        **options: the keyword arguments of applications.branches.build_branch_network
            (region_num, pooling_mode, min_value, max_value, gem_initial_power,
            use_local_branch, local_feature_dim).

    Returns:
        keras.Model, images (B, H, W, 3) -> list of branch embeddings (and local features).
    """
    backbone = build_backbone(
        backbone_name,
        image_height,
        image_width,
        pretrained=pretrained,
        pretrained_root=pretrained_root,
        last_stride=last_stride,
    )
    return build_branch_network(backbone, image_height, image_width, **options)


def _build_training_model(branch_network, num_identities, *, region_num, identity_head, **training):
    """The classification heads on the branch network, and the training model around both.

    Args:
        branch_network: keras.Model from _build_branch_network.
        num_identities, region_num, identity_head: as in build_flipreid_models.
        **training: FlipReIDTrainingModel's keyword arguments (the flip structure, the four
            regularization factors, flip_batch_norm_mode).

    Returns:
        FlipReIDTrainingModel named "training_model", not yet compiled.
    """
    classification_heads = build_classification_heads(
        branch_network, num_identities, branch_names(region_num), identity_head=identity_head
    )
    # The parts frozen with --freeze_backbone_for_N_epochs.
    backbone_model_names = ["trunk", "last_stage_global"]
    if region_num > 0:
        backbone_model_names.append("last_stage_regional")
    return FlipReIDTrainingModel(
        branch_network,
        classification_heads,
        backbone_model_names,
        **training,
        name="training_model",
    )
