import pytest
import torch
import torch.nn.functional as F

from hf_unlearn import losses


def unit(x):
    return F.normalize(x, dim=-1)


@pytest.fixture
def bank():
    torch.manual_seed(0)
    return unit(torch.randn(4, 8))


def test_similarity_loss_is_mean_true_class_cosine(bank):
    img = unit(torch.randn(3, 8))
    labels = torch.tensor([0, 2, 3])
    expected = torch.stack([img[i] @ bank[l] for i, l in enumerate(labels)]).mean()
    assert torch.allclose(losses.forget_similarity_loss(img, bank, labels), expected)
    # on the true class embedding itself the similarity is maximal (1)
    assert torch.allclose(losses.forget_similarity_loss(bank[labels], bank, labels), torch.tensor(1.0))


def test_margin_loss_zero_once_true_class_loses_by_margin():
    logits = torch.tensor([[5.0, 1.0, 0.0], [0.0, 4.0, 1.0]])
    labels = torch.tensor([0, 0])
    # row 0: true 5 vs best other 1 -> 5 - 1 + 1 = 5; row 1: true 0 vs 4 -> relu(0 - 4 + 1) = 0
    assert torch.isclose(losses.forget_margin_loss(logits, labels, margin=1.0), torch.tensor(2.5))
    assert losses.forget_margin_loss(torch.tensor([[0.0, 9.0]]), torch.tensor([0]), 1.0) == 0


def test_teacher_others_target_excludes_true_class_and_is_minimised_by_the_target():
    teacher = torch.tensor([[4.0, 2.0, 0.0]])
    labels = torch.tensor([0])
    target = F.softmax(torch.tensor([[2.0, 0.0]]), -1)
    best = torch.tensor([[-1e4, 2.0, 0.0]])  # student that already matches the masked teacher
    worse = torch.tensor([[4.0, 2.0, 0.0]])  # student still predicting the forgotten class
    l_best = losses.forget_teacher_others_loss(best, teacher, labels)
    l_worse = losses.forget_teacher_others_loss(worse, teacher, labels)
    entropy = -(target * target.log()).sum()
    assert torch.isclose(l_best, entropy, atol=1e-5)
    assert l_worse > l_best


def test_forget_loss_dispatch_rejects_unknown(bank):
    with pytest.raises(ValueError, match="unknown forget loss"):
        losses.forget_loss("nope", None, None, None, bank, None)


def test_kd_is_zero_for_identical_logits_and_positive_otherwise():
    a = torch.randn(5, 4)
    assert losses.kd_logit_loss(a, a).abs() < 1e-6
    assert losses.kd_logit_loss(a, a + torch.randn(5, 4)) > 0


def test_embedding_distill_loss_range():
    x = unit(torch.randn(6, 8))
    assert losses.embedding_distill_loss(x, x).abs() < 1e-6
    assert torch.isclose(losses.embedding_distill_loss(x, -x), torch.tensor(2.0))


def test_contrastive_losses_prefer_matching_pairs():
    x = unit(torch.randn(4, 8))
    labels = torch.arange(4)
    good = losses.class_contrastive_loss(losses.class_logits(x, x, 10.0), labels)
    bad = losses.class_contrastive_loss(losses.class_logits(x, x.roll(1, 0), 10.0), labels)
    assert good < bad


def test_phrasing_recognition_is_the_true_class_probability_under_each_phrasing():
    g = torch.Generator().manual_seed(0)
    images = F.normalize(torch.randn(4, 16, generator=g), dim=-1)
    labels = torch.tensor([0, 1, 2, 0])
    heads = F.normalize(torch.randn(10, 3, 16, generator=g), dim=-1)
    heads[7] = F.normalize(torch.stack([images[[0, 3]].mean(0), images[1], images[2]]), dim=-1)  # each class's text on its images
    heads[2] = F.normalize(torch.stack([images[1], images[2], images[0]]), dim=-1)  # every class's text on another's images
    recognised = losses.phrasing_recognition(images, heads, labels, 10.0)
    assert recognised.shape == (10,) and int(recognised.argmax()) == 7 and recognised[7] > 0.9 and recognised[2] < 0.1
    by_hand = (10.0 * images @ heads[4].t()).softmax(-1)[torch.arange(4), labels].mean()
    assert torch.allclose(recognised[4], by_hand)
