"""ExpertsVotingTagger: the voting arithmetic on generated embeddings with answers worked out by
hand, leave-one-out, errors; then (slow) real GIF embeddings from the ingest pipeline and the
real MiniLM text model."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.tagger import (
    DimensionMismatchError,
    EmptyModalityError,
    ExpertsVotingTagger,
    IdsMismatchError,
    InvalidVectorsError,
    NotFittedError,
    SkippedTagWarning,
    TaggerError,
    class_name_to_tag,
    normalise_tag,
)


def at(*degrees: float) -> np.ndarray:
    """Unit vectors in the plane at the given angles: cosine distance is then easy to reason about."""
    r = np.deg2rad(np.asarray(degrees, dtype=np.float64))
    return np.stack([np.cos(r), np.sin(r)], axis=1)


IDS = ["g1", "g2", "g3", "g4", "g5", "g6"]
TAGS = {"g1": ["a"], "g2": ["a"], "g3": ["b"], "g4": ["b"], "g5": ["c"], "g6": ["d"]}
# k=1, leave-one-out. visual: g1<->g2 and g3<->g4 find their own kind, g5<->g6 do not: 4/6.
VISUAL = at(0, 10, 90, 100, 180, 190)
# text: g1<->g2 right; g3<->g5 and g4<->g6 wrong: 2/6.
TEXT = at(0, 5, 90, 200, 95, 205)


@pytest.fixture
def tagger() -> ExpertsVotingTagger:
    return ExpertsVotingTagger(k=1).fit({"visual": (IDS, VISUAL), "text": (IDS, TEXT)}, TAGS)


def test_weights_are_the_leave_one_out_share_of_gifs_with_a_correct_tag(tagger):
    assert tagger.weights_ == pytest.approx({"visual": 4 / 6, "text": 2 / 6})
    assert tagger.coverage_ == {"visual": 6, "text": 6}
    assert tagger.hits_ == {"visual": 4, "text": 2}


def test_combined_score_is_the_weighted_mean_of_covering_experts(tagger):
    new = {"visual": (["n"], at(92)), "text": (["n"], at(1))}  # visual says b (g3), text says a (g1)
    got = dict(tagger.predict(modalities=new)["n"])
    total = 4 / 6 + 2 / 6
    assert got == pytest.approx({"b": (4 / 6) / total, "a": (2 / 6) / total})
    # an expert that does not cover the GIF neither votes nor dilutes: text alone gives a full 1.0
    assert tagger.predict(modalities={"text": (["n"], at(1))})["n"] == [("a", 1.0)]


def test_weights_change_the_ranking_not_just_the_scale():
    ids = ["a1", "a2", "b1", "b2"]
    tags = {"a1": ["a"], "a2": ["a"], "b1": ["b"], "b2": ["b"]}
    visual = at(0, 3, 90, 93)  # everyone finds its own kind: weight 1
    text = at(0, 3, 90, 180)  # a1 <-> a2 right, b1 -> a2 (87 deg) wrong, b2 -> b1 (90 deg) right: 3/4
    t = ExpertsVotingTagger(k=1).fit({"visual": (ids, visual), "text": (ids, text)}, tags)
    assert t.weights_ == pytest.approx({"visual": 1.0, "text": 0.75})
    got = dict(t.predict(modalities={"visual": (["n"], at(91)), "text": (["n"], at(2))})["n"])
    assert got == pytest.approx({"b": 1.0 / 1.75, "a": 0.75 / 1.75})
    assert got["b"] > got["a"]


def test_lower_bound_drops_rare_tags_and_is_inclusive():
    ids = ["r1", "r2", "r3", "r4"]
    tags = {"r1": ["common", "rare"], "r2": ["common"], "r3": ["common"], "r4": ["common"]}
    vectors = at(0, 1, 2, 3)
    new = {"v": (["n"], at(1.5))}
    # shared_share=None: "common" (on every GIF) counts as a hit here, which the store's rule would not let it
    strict = ExpertsVotingTagger(k=4, min_frequency=0.3, shared_share=None).fit({"v": (ids, vectors)}, tags)
    assert strict.predict_votes(modalities=new)["v"]["n"] == {"common": 1.0}
    inclusive = ExpertsVotingTagger(k=4, min_frequency=0.25, shared_share=None).fit({"v": (ids, vectors)}, tags)
    assert inclusive.predict_votes(modalities=new)["v"]["n"] == {"common": 1.0, "rare": 0.25}
    # leave-one-out at fit: r1 sees 3 neighbours without "rare"; everyone gets "common" right
    assert strict.weights_ == {"v": 1.0}


def test_frequencies_are_shares_of_the_neighbours_and_scores_stay_in_unit_interval():
    ids = [f"m{i}" for i in range(6)]
    tags = {"m0": ["x"], "m1": ["x", "y"], "m2": ["y"], "m3": ["x"], "m4": ["z"], "m5": ["x", "z"]}
    vectors = at(0, 4, 8, 12, 16, 20)
    t = ExpertsVotingTagger(k=5, min_frequency=0.0).fit({"v": (ids, vectors)}, tags)
    votes = t.predict_votes(["m0"])["v"]["m0"]  # neighbours m1..m5: x in m1,m3,m5; y in m1,m2; z in m4,m5
    assert votes == pytest.approx({"x": 3 / 5, "y": 2 / 5, "z": 2 / 5})
    for ranked in t.predict(ids, top=None).values():
        assert all(0.0 <= c <= 1.0 for _, c in ranked)


def test_equal_frequencies_rank_the_nearest_carrier_first():
    ids = ["n1", "n2", "n3"]
    tags = {"n1": ["zebra", "common"], "n2": ["apple", "common"], "n3": ["mango", "common"]}
    t = ExpertsVotingTagger(k=3, min_frequency=0.0, shared_share=None).fit({"v": (ids, at(1, 5, 9))}, tags)
    assert t.weights_ == {"v": 1.0}  # "common" is always right (counted: shared_share=None)
    new = {"v": (["q"], at(0))}
    assert list(t.predict_votes(modalities=new)["v"]["q"]) == ["common", "zebra", "apple", "mango"]
    got = t.predict(modalities=new)["q"]
    assert [tag for tag, _ in got] == ["common", "zebra", "apple", "mango"]
    assert [c for _, c in got] == pytest.approx([1.0, 1 / 3, 1 / 3, 1 / 3])


def test_original_tags_keep_1_when_confirmed_else_0_7(tagger):
    got = tagger.predict(modalities={"visual": (["n"], at(92))}, tags={"n": ["B ", "zzz"]})["n"]
    assert got == [("b", 1.0), ("zzz", 0.7)]
    custom = ExpertsVotingTagger(k=1, confirmed_confidence=0.9, unconfirmed_confidence=0.5)
    custom.fit({"visual": (IDS, VISUAL), "text": (IDS, TEXT)}, TAGS)
    got = custom.predict(modalities={"visual": (["n"], at(92))}, tags={"n": ["b", "zzz"]})["n"]
    assert got == [("b", 0.9), ("zzz", 0.5)]


def test_a_zero_weight_expert_confirms_nothing():
    ids = ["u1", "u2", "u3"]
    tags = {"u1": ["p"], "u2": ["q"], "u3": ["r"]}  # every tag unique: no expert can ever be right
    t = ExpertsVotingTagger(k=2).fit({"v": (ids, at(0, 10, 20))}, tags)
    assert t.weights_ == {"v": 0.0}
    assert t.predict_votes(["u1"])["v"]["u1"] == {"q": 0.5, "r": 0.5}
    assert t.predict(["u1"]) == {"u1": []}  # no trusted vote: its original tag is neither confirmed nor lowered


def test_leave_one_out_never_uses_a_gifs_own_tags():
    ids = ["s1", "s2", "s3"]
    tags = {"s1": ["secret", "shared"], "s2": ["shared"], "s3": ["shared"]}
    vectors = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # s1 and s2 identical
    t = ExpertsVotingTagger(k=3, min_frequency=0.0, shared_share=None).fit({"v": (ids, vectors)}, tags)
    votes = t.predict_votes(["s1"])["v"]["s1"]
    assert "secret" not in votes and votes == {"shared": 1.0}
    assert dict(t.predict(["s1"])["s1"]) == {"shared": 1.0, "secret": 0.7}
    # a "new" GIF that reuses a fitted id is still not its own neighbour
    assert "secret" not in t.predict_votes(modalities={"v": (["s1"], [[1.0, 0.0]])})["v"]["s1"]
    # the weights too are leave-one-out: own tags would make every GIF right
    unique = ExpertsVotingTagger(k=1).fit({"v": (ids, vectors)}, {"s1": ["x"], "s2": ["y"], "s3": ["z"]})
    assert unique.weights_ == {"v": 0.0}


def test_untagged_gifs_are_queried_but_never_neighbours():
    ids = ["t1", "t2", "t3", "e"]
    tags = {"t1": ["x"], "t2": ["x"], "t3": ["y"], "e": []}
    t = ExpertsVotingTagger(k=1).fit({"v": (ids, at(0, 5, 90, 1))}, tags)
    assert t.predict_votes(["t1"])["v"]["t1"] == {"x": 1.0}  # e is nearer but has nothing to say
    assert t.weights_ == {"v": pytest.approx(2 / 3)}  # t1, t2 right; t3 -> t2 wrong; e not counted
    assert t.coverage_ == {"v": 3}
    assert t.predict(["e"]) == {"e": [("x", 1.0)]}


def test_several_vectors_per_gif_and_max_distance():
    # face tracks: p1 shows persons A and B, p2 shows B, p3 shows C; p4 shows A
    a, b, c = at(0), at(120), at(240)
    ids = ["p1", "p1", "p2", "p3", "p4"]
    vectors = np.vstack([a, b, b + 0.01, c, a + 0.01])
    tags = {"p1": ["alice", "bob"], "p2": ["bob"], "p3": ["carol"], "p4": ["alice"]}
    t = ExpertsVotingTagger(k=1, max_distance={"identity": 0.05}).fit({"identity": (ids, vectors)}, tags)
    votes = t.predict_votes(["p2", "p3", "p4"])["identity"]
    assert votes["p2"] == {"alice": 1.0, "bob": 1.0}  # p1 shares B with p2
    assert votes["p4"] == {"alice": 1.0, "bob": 1.0}  # and A with p4
    assert votes["p3"] == {}  # nobody within the same-person distance: covered, no vote
    assert t.weights_ == {"identity": pytest.approx(3 / 4)}  # p1 -> p2 or p4 right, p2, p4 right, p3 not
    unlimited = ExpertsVotingTagger(k=1).fit({"identity": (ids, vectors)}, tags)
    assert unlimited.predict_votes(["p3"])["identity"]["p3"] != {}


def test_identity_tags_are_a_direct_expert():
    identity = {"g1": ["a"], "g3": ["Someone Else"], "g5": []}
    t = ExpertsVotingTagger(k=1).fit({"visual": (IDS, VISUAL)}, TAGS, identity_tags=identity)
    assert t.weights_["identity"] == pytest.approx(1 / 3)  # g1 right; g3 wrong; g5 looked, named no one
    assert t.coverage_["identity"] == 3
    got = dict(t.predict(modalities={"visual": (["n"], at(92))}, identity_tags={"n": ["Keanu Reeves"]})["n"])
    total = 4 / 6 + 1 / 3
    assert got == pytest.approx({"b": (4 / 6) / total, "keanu reeves": (1 / 3) / total})
    assert class_name_to_tag("Brad_Pitt_[m.0c6qh]") == "brad pitt"
    assert normalise_tag("  Jennifer   LAWRENCE ") == "jennifer lawrence"


def test_a_tag_the_store_would_refuse_is_left_out_naming_its_media():
    long_tag = "x" * 101
    with pytest.warns(SkippedTagWarning, match=r"tags: left out 2 tag\(s\) the store would refuse: media 'g1', tag "
                                               r"'x+\.\.\.x+' \(tag is 101 characters long; the limit is 100\); "
                                               r"media 'g3', tag 'b\\x00' .*control characters"):
        t = ExpertsVotingTagger(k=1).fit({"visual": (IDS, VISUAL)}, {**TAGS, "g1": ["a", long_tag], "g3": ["b\x00", "b"]})
    assert t.tags_ == TAGS  # the other tags of both media stay
    with pytest.raises(TaggerError, match="101 characters"):  # asked for directly, the tag is still refused
        normalise_tag(long_tag)


def test_the_tagging_bench_reads_a_csv_with_a_tag_the_store_would_refuse(tmp_path):
    from bench.tagging import read_tags

    csv = tmp_path / "gifs.csv"
    csv.write_text(f"file,uploader_tags\nnods.gif,Nods;{'y' * 150};nods\nempty.gif,\n", encoding="utf-8")
    with pytest.warns(SkippedTagWarning, match=r"gifs\.csv uploader_tags: .*media 'nods\.gif', tag 'y+\.\.\.y+'"):
        assert read_tags(csv) == {"nods.gif": ["nods"], "empty.gif": []}


def test_top_limits_and_orders(tagger):
    got = tagger.predict(modalities={"visual": (["n"], at(92)), "text": (["n"], at(1))},
                         tags={"n": ["zzz"]}, top=2)["n"]
    assert got == [("zzz", 0.7), ("b", pytest.approx(2 / 3))]


def test_errors():
    with pytest.raises(NotFittedError):
        ExpertsVotingTagger().predict(["g1"])
    with pytest.raises(EmptyModalityError):
        ExpertsVotingTagger().fit({"v": ([], np.zeros((0, 4)))}, {})
    with pytest.raises(EmptyModalityError):
        ExpertsVotingTagger().fit({}, TAGS)
    with pytest.raises(IdsMismatchError, match="without a tags entry"):
        ExpertsVotingTagger().fit({"v": (IDS + ["x"], at(0, 1, 2, 3, 4, 5, 6))}, TAGS)
    with pytest.raises(IdsMismatchError, match="in no modality"):
        ExpertsVotingTagger().fit({"v": (IDS[:5], VISUAL[:5])}, TAGS)
    with pytest.raises(DimensionMismatchError, match="mixes"):
        ExpertsVotingTagger().fit({"v": (["g1", "g2"], [[1.0, 0.0], [1.0, 0.0, 0.0]])}, {"g1": ["a"], "g2": ["a"]})
    with pytest.raises(InvalidVectorsError, match="2 ids for 3"):
        ExpertsVotingTagger().fit({"v": (["g1", "g2"], at(0, 1, 2))}, {"g1": ["a"], "g2": ["a"]})
    with pytest.raises(InvalidVectorsError, match="all-zero"):
        ExpertsVotingTagger().fit({"v": (["g1", "g2"], [[1.0, 0.0], [0.0, 0.0]])}, {"g1": ["a"], "g2": ["a"]})
    with pytest.raises(TaggerError, match="not one string"):
        ExpertsVotingTagger().fit({"v": (IDS, VISUAL)}, {**TAGS, "g1": "a"})
    with pytest.raises(TaggerError, match="k must be"):
        ExpertsVotingTagger(k=0).fit({"v": (IDS, VISUAL)}, TAGS)
    with pytest.raises(TaggerError, match="given twice"):
        ExpertsVotingTagger().fit({"identity": (IDS, VISUAL)}, TAGS, identity_tags={"g1": ["a"]})
    fitted = ExpertsVotingTagger().fit({"v": (IDS, VISUAL)}, TAGS)
    with pytest.raises(DimensionMismatchError, match="fitted with 2"):
        fitted.predict(modalities={"v": (["n"], np.ones((1, 3)))})
    with pytest.raises(IdsMismatchError, match="not fitted"):
        fitted.predict(["nope"])
    with pytest.raises(TaggerError, match="were not fitted"):
        fitted.predict(modalities={"w": (["n"], at(0))})
    with pytest.raises(TaggerError, match="not both"):
        fitted.predict(["g1"], modalities={"v": (["n"], at(0))})
    with pytest.raises(IdsMismatchError, match="in no modality"):
        fitted.predict(modalities={"v": (["n"], at(0))}, tags={"other": ["x"]})


# -- real models ----------------------------------------------------------------------------

CALVIN = ["calvin-hobbes-dont-knock-smock-1.gif", "calvin-hobbes-dont-knock-smock-2.gif"]


@pytest.fixture(scope="module")
def real_gifs(gifs_dir: Path, tmp_path_factory) -> dict[str, object]:
    from embeddings.pipeline import IngestPipeline
    from models.settings import Settings

    names = [*CALVIN, "bringing-pizza.gif"]
    pipeline = IngestPipeline(Settings(data_dir=tmp_path_factory.mktemp("tagger-data")))
    results = list(pipeline.run([gifs_dir / n for n in names]))
    assert all(r.status == "ok" for r in results), [r.error for r in results]
    return {r.path.name: r for r in results}


@pytest.mark.slow
def test_real_gif_embeddings_vote_for_the_other_half_of_a_pair(real_gifs):
    ids = list(real_gifs)
    vectors = np.stack([real_gifs[i].gif_embedding for i in ids])
    tags = {CALVIN[0]: ["calvin", "hobbes", "knock", "smock"], CALVIN[1]: ["calvin", "hobbes", "knock", "smock"],
            "bringing-pizza.gif": ["bringing", "pizza"]}
    t = ExpertsVotingTagger(k=1).fit({"visual": (ids, vectors)}, tags)
    # the two Calvin clips are each other's nearest GIF; the pizza clip has nobody to learn from
    assert t.weights_ == {"visual": pytest.approx(2 / 3)}
    assert dict(t.predict([CALVIN[0]])[CALVIN[0]]) == {"calvin": 1.0, "hobbes": 1.0, "knock": 1.0, "smock": 1.0}
    # a GIF the tagger never saw: the second Calvin clip, against the first and the pizza clip
    seen = [CALVIN[0], "bringing-pizza.gif"]
    t2 = ExpertsVotingTagger(k=1).fit({"visual": (seen, np.stack([real_gifs[i].gif_embedding for i in seen]))},
                                       {i: tags[i] for i in seen})
    assert t2.weights_ == {"visual": 0.0}  # two unrelated GIFs: neither can teach the other
    votes = t2.predict_votes(modalities={"visual": (["new"], real_gifs[CALVIN[1]].gif_embedding)})
    assert votes["visual"]["new"] == {"calvin": 1.0, "hobbes": 1.0, "knock": 1.0, "smock": 1.0}


@pytest.mark.slow
def test_real_minilm_text_expert():
    from models.registry import create_model

    embedder = create_model("minilm-l6-v2")
    v = embedder.embed(["happy", "joy", "car"])
    assert v.shape == (3, 384) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2]
    assert embedder.embed([]).shape == (0, 384)
    with pytest.raises(ValueError, match="not one string"):
        embedder.embed("happy")
    texts = {"d1": "laughing with joy", "d2": "a big smile, delighted", "d3": "sports car on a race track",
             "d4": "driving a truck down the highway", "d5": "sad and crying"}
    tags = {"d1": ["happy"], "d2": ["happy"], "d3": ["vehicle"], "d4": ["vehicle"], "d5": ["sad"]}
    ids = list(texts)
    t = ExpertsVotingTagger(k=1).fit({"text": (ids, embedder.embed([texts[i] for i in ids]))}, tags)
    assert t.weights_ == {"text": pytest.approx(4 / 5)}  # meanings make neighbours: only "sad" has no peer
    got = t.predict(modalities={"text": (["q"], embedder.embed(["so cheerful and glad"]))})["q"]
    assert got[0][0] == "happy"


def test_a_class_name_too_long_for_a_tag_names_nobody_and_stops_nothing():
    from labeling.auto_tagging import identity_names

    long_name = "Maria " + "x" * 150  # a valid class name (up to 200 characters), too long for a tag (100)
    names = identity_names({1: long_name, 2: "Ariel Sharon"}, [(5, "approved", 1), (5, "approved", 2), (6, "predicted", 1)], [])
    assert names == {5: ["ariel sharon"], 6: []}
