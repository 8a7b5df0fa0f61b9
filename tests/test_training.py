"""Training, artifact export and retrieval metrics of the Fashion-MNIST embedder (fast, CPU)."""
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image
from torch.nn import functional as F

from models import fashion_mnist
from models.embedders import artifact_spec, load_embedder
from models.metrics import evaluate_retrieval, knn_predict, nearest_neighbours
from models.train import (AUGMENTATIONS, PREPROCESSING, CosineClassifier, EmbeddingCNN, FilterMuon, FlipAveraged,
                          GeneralizedMeanPool, LossRankedSampler, ShopperPhotoAugment, TrainConfig, Trainer,
                          WithinClassWhitening, evaluation_set, export, exported_model, normalized, orthogonalized,
                          patch_whitening_filters, recalibrate_batch_norm, split_training_data, train,
                          within_class_whitening)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """40 steps of a narrow network on 512 training images: about a second of CPU. Batches are drawn
    uniformly, so that their loss follows the loss on all the images (loss-ranked batches are harder)."""
    out = tmp_path_factory.mktemp("artifacts") / "tiny.pt"
    config = TrainConfig(out=out, steps=40, batch_size=64, widths=(4, 8, 8, 8), dim=16, train_limit=512,
                         selection_pressure=1.0)
    return config, train(config)


def test_training_on_a_tiny_subset_decreases_the_loss(tiny_run):
    _, run = tiny_run
    assert run.steps == 40 and len(run.losses) == 40
    first, last = np.mean(run.losses[:5]), np.mean(run.losses[-5:])
    assert last < 0.8 * first, (first, last)


def test_batches_favour_images_with_high_losses_and_images_not_yet_drawn():
    sampler = LossRankedSampler(10, pressure=10.0, generator=torch.Generator().manual_seed(0))
    sampler.record(torch.arange(5), torch.arange(5.0))  # images 5-9 never drawn; image 4 has the highest loss
    counts = torch.bincount(torch.cat([sampler.draw(1) for _ in range(20_000)]), minlength=10)
    assert counts[5:].min() > counts[4] > counts[3] > counts[2] > counts[1] > counts[0], counts
    assert 6 < counts.max() / counts[0] < 10.5, counts  # top rank against bottom: 10 ** 0.9 = 7.9

    uniform = LossRankedSampler(10, pressure=1.0, generator=torch.Generator().manual_seed(0))
    uniform.record(torch.arange(10), torch.arange(10.0))
    counts = torch.bincount(torch.cat([uniform.draw(1) for _ in range(20_000)]), minlength=10)
    assert counts.max() / counts.min() < 1.2, counts
    assert sorted(uniform.draw(10).tolist()) == list(range(10))  # a batch never repeats an image


def test_cosine_head_scores_cosines_with_a_margin_on_the_true_class_only_while_training():
    head = CosineClassifier(4, 3, TrainConfig(head="cosine", head_scale=10.0, head_margin=0.2))
    embeddings, labels = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    cosines = F.normalize(embeddings, dim=1) @ F.normalize(head.weight, dim=1).T
    torch.testing.assert_close(head(embeddings), 10 * cosines)
    torch.testing.assert_close(head(embeddings, labels), 10 * (cosines - 0.2 * F.one_hot(labels, 3)))


def test_training_with_the_linear_head_decreases_the_loss(tiny_run, tmp_path):
    config, _ = tiny_run
    losses = train(replace(config, out=tmp_path / "linear.pt", head="linear")).losses
    assert np.mean(losses[-5:]) < 0.9 * np.mean(losses[:5]), losses  # from chance (ln 10 = 2.30) to about 2.0


def test_resuming_an_interrupted_run_gives_the_same_model(tmp_path, monkeypatch):
    config = TrainConfig(out=tmp_path / "straight.pt", steps=12, batch_size=32, widths=(4, 4, 4, 4), dim=8, train_limit=256,
                         checkpoint_every_s=0)  # checkpoint after every step
    straight = train(config)

    take_step = Trainer.train_step

    def crash_before_step_8(trainer, images, labels):
        if trainer.step == 7:
            raise KeyboardInterrupt
        return take_step(trainer, images, labels)

    interrupted = replace(config, out=tmp_path / "interrupted.pt")
    monkeypatch.setattr(Trainer, "train_step", crash_before_step_8)
    with pytest.raises(KeyboardInterrupt):
        train(interrupted)
    monkeypatch.undo()
    resumed = train(interrupted, resume=True)

    assert resumed.steps == 12 and resumed.losses == straight.losses
    for name, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name


def test_a_checkpoint_from_before_gem_pooling_the_whitened_stem_muon_and_recalibration_resumes_as_trained(tmp_path):
    config = TrainConfig(out=tmp_path / "old.pt", steps=2, batch_size=32, widths=(4, 4, 4, 4), dim=8, train_limit=256,
                         pooling="average", whitened_stem=False, muon=False, recalibrate_batch_norm=False)
    train(config)
    state = torch.load(config.checkpoint, weights_only=False)
    for added_since in ("pooling", "whitened_stem", "muon", "recalibrate_batch_norm"):
        del state["config"][added_since]
    state["optimizer"] = state.pop("optimizers")[0]
    torch.save(state, config.checkpoint)
    trainer = Trainer.from_checkpoint(config.checkpoint, train_size=256)
    assert trainer.config.pooling == "average" and not trainer.config.whitened_stem and not trainer.config.muon
    assert not trainer.config.recalibrate_batch_norm
    assert [type(optimizer) for optimizer in trainer.optimizers] == [torch.optim.AdamW]
    assert trainer.optimizers[0].state_dict()["state"].keys() == state["optimizer"]["state"].keys()
    assert all(parameter.requires_grad for parameter in trainer.model.parameters())
    assert trainer.model.state_dict().keys() == state["model"].keys()


def test_patch_whitening_filters_give_uncorrelated_unit_responses_in_opposite_pairs():
    images = torch.from_numpy(fashion_mnist.load("train")[0][:500]).unsqueeze(1)
    filters = patch_whitening_filters(images, 16)
    assert filters.shape == (16, 1, 3, 3)
    torch.testing.assert_close(filters[8:], -filters[:8])
    pixels = (images.float() / 255 - PREPROCESSING.mean[0]) / PREPROCESSING.std[0]
    responses = F.conv2d(pixels.double(), filters[:8].double(), padding=1).transpose(0, 1).reshape(8, -1)
    second_moments = responses @ responses.T / responses.shape[1]
    off_diagonal = second_moments - torch.diag(second_moments.diagonal())
    assert off_diagonal.abs().max() < 1e-6, second_moments
    # unit variance, short of it by eps / (eigenvalue + eps) on the weakest of the 8 components
    assert (second_moments.diagonal() > 0.9).all() and (second_moments.diagonal() < 1).all(), second_moments
    assert patch_whitening_filters(images, 5).shape == (5, 1, 3, 3)
    with pytest.raises(ValueError, match="at most 18"):
        patch_whitening_filters(images, 20)


def test_whitened_stem_stays_fixed_while_the_layers_above_it_train(tmp_path):
    config = TrainConfig(out=tmp_path / "stem.pt", steps=3, batch_size=32, widths=(4, 4, 4, 4), dim=8, train_limit=256)
    assert config.whitened_stem  # the default
    train(config)
    trained = torch.load(config.checkpoint, weights_only=False)["model"]
    images = torch.from_numpy(split_training_data(config)[0][0]).unsqueeze(1)
    torch.testing.assert_close(trained["features.0.weight"], patch_whitening_filters(images, 4))
    torch.testing.assert_close(trained["features.1.weight"], torch.ones(4))  # the stem's batch norm: no scale, no shift
    torch.testing.assert_close(trained["features.1.bias"], torch.zeros(4))
    untrained = Trainer(config, train_size=256).model.state_dict()  # the same seed: the same initial weights
    assert not torch.equal(trained["features.3.weight"], untrained["features.3.weight"])  # the first group's conv


def test_recalibrated_batch_norm_holds_the_statistics_of_the_given_images_not_of_the_last_batches():
    images, labels = fashion_mnist.load("train")
    images = torch.from_numpy(images[:1000].copy()).unsqueeze(1)
    model = EmbeddingCNN((4, 8, 8, 8), dim=8, pooling="gem").to(memory_format=torch.channels_last).train()
    with torch.no_grad():
        model(normalized(images[torch.from_numpy(labels[:1000] == 1)].float() / 255))  # a batch of trousers only
    recalibrate_batch_norm(model, images)
    assert not model.training
    stem_norm = model.features[1]
    with torch.no_grad():
        stem_responses = model.features[0](normalized(images.float() / 255)).transpose(0, 1).reshape(4, -1)
    # four equal batches of 250: their average is the mean over all 1,000 images
    torch.testing.assert_close(stem_norm.running_mean, stem_responses.mean(1), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(stem_norm.running_var, stem_responses.var(1), atol=1e-3, rtol=1e-2)
    assert stem_norm.momentum == 0.1  # training would go on as before


def test_orthogonalized_keeps_the_singular_vectors_and_evens_out_the_singular_values():
    generator = torch.Generator().manual_seed(0)
    for shape in [(8, 72), (72, 8), (16, 16)]:
        left, _ = torch.linalg.qr(torch.randn(shape[0], min(shape), generator=generator))
        right, _ = torch.linalg.qr(torch.randn(shape[1], min(shape), generator=generator))
        singular_values = torch.logspace(-1, 1, min(shape))  # a condition number of 100
        result = orthogonalized(left * singular_values @ right.T)
        in_the_same_bases = left.T @ result @ right
        off_diagonal = in_the_same_bases - torch.diag(in_the_same_bases.diagonal())
        assert off_diagonal.abs().max() < 1e-4, off_diagonal
        assert (in_the_same_bases.diagonal() > 0.65).all() and (in_the_same_bases.diagonal() < 1.25).all(), in_the_same_bases


def test_filter_muon_moves_every_direction_of_a_filter_bank_alike_at_adamw_scale():
    filters = torch.nn.Parameter(torch.zeros(8, 4, 3, 3))
    filters.grad = torch.randn(8, 4, 3, 3, generator=torch.Generator().manual_seed(0))
    filters.grad[:, 0] *= 100  # one input channel dominates the gradient
    FilterMuon([filters], lr=0.01, weight_decay=0.0).step()
    singular_values = torch.linalg.svdvals(-filters.detach().flatten(1))
    expected = 0.2 * 0.01 * 36 ** 0.5  # AdamW-matched: an RMS of about 0.2 x lr per weight
    assert (singular_values > 0.6 * expected).all() and (singular_values < 1.3 * expected).all(), singular_values
    assert 0.1 * 0.01 < filters.detach().pow(2).mean().sqrt() < 0.3 * 0.01


def test_gem_pooling_spans_average_to_max_pooling():
    features = 0.5 + torch.rand(2, 3, 4, 4)
    torch.testing.assert_close(GeneralizedMeanPool(1.0)(features), features.mean((2, 3)))
    gem = GeneralizedMeanPool(3.0)(features)
    assert (gem > features.mean((2, 3))).all() and (gem < features.amax((2, 3))).all()
    # (max^p / 16)^(1/p) = max * 16^(-1/p): within 1.4 % of the max at p = 200
    torch.testing.assert_close(GeneralizedMeanPool(200.0)(features), features.amax((2, 3)), rtol=0.015, atol=0)


def test_artifact_round_trips_with_its_preprocessing_and_metrics(tiny_run):
    config, run = tiny_run
    metrics = {"fashion_mnist_test": {"recall@1": 0.5}, "training": {"steps": run.steps}}
    path = export(run, metrics)

    spec = artifact_spec(path)
    assert run.dim == config.dim  # the default read-out: the embedding layer the cosine head trains
    assert (spec.dim, spec.preprocessing, spec.metrics) == (run.dim, PREPROCESSING, metrics)

    rng = np.random.default_rng(0)
    photos = [Image.fromarray(rng.integers(0, 256, (40, 32, 3), dtype=np.uint8)) for _ in range(3)]
    photos.append(Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).convert("RGB"))
    loaded = load_embedder(str(path)).embed(photos)

    transform = PREPROCESSING.transform()
    with torch.inference_mode():
        expected = F.normalize(run.model(torch.stack([transform(photo) for photo in photos])), dim=1).numpy()
    assert loaded.shape == (4, run.dim) and loaded.dtype == np.float32
    np.testing.assert_allclose(loaded, expected, atol=1e-5)


def test_augmentation_is_reproducible_from_its_seed_and_keeps_the_shape():
    images = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8)
    first = ShopperPhotoAugment(torch.Generator().manual_seed(1))(images)
    again = ShopperPhotoAugment(torch.Generator().manual_seed(1))(images)
    other = ShopperPhotoAugment(torch.Generator().manual_seed(2))(images)
    assert first.shape == images.shape and first.dtype == torch.float32
    assert torch.equal(first, again) and not torch.equal(first, other)


# Six points on the unit circle; similarity order follows the angle between them.
ANGLES_DEGREES = [0, 10, 28, 50, 60, 180]
LABELS = np.array([0, 0, 1, 0, 1, 1])
# Neighbours by angular distance, worked out by hand (e.g. from 28 deg: 10 is 18 away, 50 is 22 away, ...).
EXPECTED_NEIGHBOURS = [[1, 2, 3, 4, 5], [0, 2, 3, 4, 5], [1, 3, 0, 4, 5],
                       [4, 2, 1, 0, 5], [3, 2, 1, 0, 5], [4, 3, 2, 1, 0]]


def circle_points() -> np.ndarray:
    radians = np.deg2rad(ANGLES_DEGREES)
    return np.stack([np.cos(radians), np.sin(radians)], axis=1).astype(np.float32)


def test_nearest_neighbours_leave_the_query_out_and_match_across_block_sizes():
    for block_size in (1, 4, 100):
        assert nearest_neighbours(circle_points(), k=5, block_size=block_size).tolist() == EXPECTED_NEIGHBOURS


def test_metrics_match_a_hand_computed_case():
    # Relevance of the neighbours above (same label as the query), by query:
    #   0: 1 0 1 0 0   1: 1 0 1 0 0   2: 0 0 0 1 1   3: 0 0 1 1 0   4: 0 1 0 0 1   5: 1 0 1 0 0
    # Each class has 3 members, so R = 2 for every query.
    #   R@1 = 3/6 (queries 0, 1, 5);  R@2 = 4/6 (adds 4);  R@10 (only 5 neighbours exist) = 6/6.
    #   P@2 = (1/2 + 1/2 + 0 + 0 + 1/2 + 1/2)/6 = 1/3.
    #   AP@R: queries 0, 1, 5 hit at rank 1 only -> (1/1)/2 = 0.5; query 4 hits at rank 2 -> (1/2)/2 = 0.25;
    #   queries 2, 3 -> 0. mAP@R = (0.5*3 + 0.25)/6 = 1.75/6.
    #   3-NN vote: 0 -> {0,1,0}: 0 ok; 1 -> {0,1,0}: 0 ok; 2 -> {0,0,0}: 0 wrong; 3 -> {1,1,0}: 1 wrong;
    #   4 -> {0,1,0}: 0 wrong; 5 -> {1,0,1}: 1 ok. Accuracy 3/6.
    result = evaluate_retrieval(circle_points(), LABELS, recall_ks=(1, 2), precision_k=2, knn_k=3, block_size=4)
    assert result.recall_curve == pytest.approx({1: 0.5, 2: 4 / 6})
    assert result.metrics == pytest.approx({"recall@1": 0.5, "recall@10": 1.0, "precision@2": 1 / 3,
                                            "map@r": 1.75 / 6, "knn3_accuracy": 0.5})
    assert result.predictions.tolist() == [0, 0, 0, 1, 0, 1]


def test_knn_vote_tie_goes_to_the_class_with_the_nearer_neighbour():
    neighbour_labels = np.array([[1, 0, 0, 1], [0, 1, 1, 0], [2, 1, 1, 1]])
    assert knn_predict(neighbour_labels, k=4, num_classes=3).tolist() == [1, 0, 1]


def test_flip_averaged_artifact_embeds_an_image_and_its_mirror_alike(tiny_run):
    config, run = tiny_run
    # the defaults: test-time flip averaging and whitening are part of the artifact
    assert isinstance(run.model, WithinClassWhitening) and isinstance(run.model.embedder, FlipAveraged)
    path = export(run, {}, out=config.out.with_name("flip.pt"))
    photo = np.random.default_rng(1).integers(0, 256, (28, 28), dtype=np.uint8)
    embedder = load_embedder(str(path))
    original, mirrored = embedder.embed([Image.fromarray(photo).convert("RGB"),
                                         Image.fromarray(photo[:, ::-1].copy()).convert("RGB")])
    np.testing.assert_allclose(original, mirrored, atol=1e-5)


def test_no_augmentation_is_only_normalization_and_mild_keeps_the_garment_whole():
    images = torch.randint(0, 256, (16, 1, 28, 28), dtype=torch.uint8)
    normalized = (images.float() / 255 - PREPROCESSING.mean[0]) / PREPROCESSING.std[0]
    plain = ShopperPhotoAugment(torch.Generator().manual_seed(0), **AUGMENTATIONS["none"])(images)
    torch.testing.assert_close(plain, normalized, atol=1e-5, rtol=0)
    # Mild: mirrored and shifted by at most ~1.5 px, exposure untouched: the mean brightness barely moves.
    mild = ShopperPhotoAugment(torch.Generator().manual_seed(0), **AUGMENTATIONS["mild"])(images)
    assert mild.shape == images.shape
    assert (mild.mean((1, 2, 3)) - normalized.mean((1, 2, 3))).abs().max() < 0.25


def test_frozen_baseline_embeddings_are_cached_and_reused(tmp_path, monkeypatch):
    from models import evaluate

    images = np.random.default_rng(2).integers(0, 256, (2, 28, 28), dtype=np.uint8)
    first = evaluate.system_embeddings("efficientnet_lite0", images, forward_batch=4, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("efficientnet_lite0-2-*.npy"))) == 1

    def no_model(*args, **kwargs):
        raise AssertionError("the cached embeddings should have been used")

    monkeypatch.setattr(evaluate, "load_embedder", no_model)
    np.testing.assert_array_equal(evaluate.system_embeddings("efficientnet_lite0", images, 4, tmp_path), first)
    with pytest.raises(AssertionError):  # other images: not in the cache
        evaluate.system_embeddings("efficientnet_lite0", images[::-1].copy(), 4, tmp_path)


def test_held_out_images_are_left_out_of_training_and_replace_the_test_split():
    config = TrainConfig(train_limit=1000, holdout=200)
    (train_images, train_labels), (held_images, held_labels) = split_training_data(config)
    assert (len(train_images), len(held_images)) == (800, 200)
    everything, _ = fashion_mnist.load("train")
    np.testing.assert_array_equal(held_images, everything[800:1000])
    name, images, labels = evaluation_set(config)
    assert name == "fashion_mnist_train_holdout" and images is not None and len(labels) == 200
    assert evaluation_set(replace(config, holdout=0))[0] == "fashion_mnist_test"


def test_crop_augmentation_moves_whole_pixels_without_resampling():
    images = torch.randint(1, 256, (8, 1, 28, 28), dtype=torch.uint8)
    cropped = ShopperPhotoAugment(torch.Generator().manual_seed(0), **AUGMENTATIONS["crop"])(images)
    pixels = cropped * PREPROCESSING.std[0] + PREPROCESSING.mean[0]
    for original, moved in zip(images.float() / 255, pixels):
        candidates = [torch.roll(torch.flip(original, dims=(2,)) if mirror else original, (dy, dx), dims=(1, 2))
                      for mirror in (False, True) for dy in range(-2, 3) for dx in range(-2, 3)]
        # Each output is a mirrored or not, shifted copy: its kept pixels match one candidate exactly.
        kept = moved > 1e-4
        assert any(torch.allclose(moved[kept], candidate[kept], atol=1e-5) and kept.sum() >= 24 * 24
                   for candidate in candidates)


def test_embedding_read_out_exports_the_trained_embedding_layer(tiny_run):
    config, run = tiny_run
    trainer = Trainer.from_checkpoint(config.checkpoint, train_size=512)
    model, dim = exported_model(trainer.model, replace(config, readout="embedding", flip_average=False))
    images = torch.randn(3, 1, 28, 28)
    with torch.inference_mode():
        assert dim == config.dim and model(images).shape == (3, config.dim)
        torch.testing.assert_close(model(images), trainer.model.eval()(images))


def within_class_deviations(vectors: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each vector minus the mean of its class."""
    class_means = torch.stack([vectors[labels == label].mean(0) for label in range(int(labels.max()) + 1)])
    return vectors - class_means[labels]


def test_whitening_makes_the_within_class_covariance_the_identity_and_lets_retrieval_see_the_class_gap():
    # Two classes 1 apart along the first axis, spread 0.1 there and 1 along ten other axes.
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(400) % 2
    embeddings = torch.cat([labels.unsqueeze(1) + 0.1 * torch.randn(400, 1, generator=generator),
                            torch.randn(400, 10, generator=generator)], dim=1)
    mean, projection = within_class_whitening(embeddings, labels, shrinkage=0.0)
    whitened = (embeddings - mean) @ projection
    deviations = within_class_deviations(whitened, labels)
    torch.testing.assert_close(deviations.T @ deviations / len(whitened), torch.eye(11), atol=1e-4, rtol=0)
    # Cosine retrieval: centred only, the ten wide axes decide the neighbours; whitened, the class gap does.
    centred, fair = (evaluate_retrieval(F.normalize(vectors, dim=1).numpy(), labels.numpy()).metrics["recall@1"]
                     for vectors in (embeddings - mean, whitened))
    assert fair > 0.95 and centred < 0.75, (centred, fair)


def test_whitening_shrinkage_leaves_the_small_directions_less_stretched():
    generator = torch.Generator().manual_seed(1)
    labels = torch.arange(300) % 3
    embeddings = torch.randn(300, 4, generator=generator) * torch.tensor([1.0, 0.5, 0.1, 0.01])
    deviations = within_class_deviations(embeddings, labels)
    eigenvalues = torch.linalg.eigvalsh(deviations.double().T @ deviations.double() / len(embeddings))
    for shrinkage in (0.5, 2.0):
        _, projection = within_class_whitening(embeddings, labels, shrinkage)
        whitened = (deviations @ projection).double()
        expected = eigenvalues / (eigenvalues + shrinkage * eigenvalues.mean())
        torch.testing.assert_close(torch.linalg.eigvalsh(whitened.T @ whitened / len(whitened)), expected,
                                   atol=1e-5, rtol=1e-4)
