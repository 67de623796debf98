"""Citations over the real documents: every answer cites only the document that holds it.

All of ``../shared/data/documents/`` is uploaded (the unreadable ones fail, as
they should), then questions whose answer is in one known document are asked
with the offline extractive provider. Every citation must point to a chunk of
that document whose text contains the answer's terms, and say where it is.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness import RunningSystem

# question -> (the document that answers it, terms every cited chunk contains)
QUESTIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "Which airplanes does the FAA airworthiness directive apply to?": (
        "federal-register-2020-17221.pdf",
        ("737",),
    ),
    "What did MeerKAT detect near FRB 20190714A?": ("2201.00069.pdf", ("meerkat",)),
    "Was Johnston coming to raise the siege of Vicksburg?": (
        "Seige_of_Vicksburg_Sample_OCR.pdf",
        ("johnston",),
    ),
    "How do column masks protect data in DB2 for i?": ("redp5110_sampled.pdf", ("mask",)),
    "How is creativity defined for machine learning?": ("issue-982-example.pdf", ("creativ",)),
    "Do the NICS background check statistics represent the number of firearms sold?": (
        "nics-background-checks-2015-11.pdf",
        ("sold",),
    ),
    "What should a duck remember when swimming in the lake?": ("word_sample.docx", ("swim",)),
    "Quelle démolition a été demandée au boulevard de Sainte-Adèle?": (
        "2023-06-20-PV.pdf",
        ("démolition",),
    ),
}


@pytest.fixture(scope="module")
def library(system: RunningSystem, documents_dir: Path) -> dict[str, str]:
    """Every shared document uploaded and processed; filename -> document id."""
    paths = sorted(p for p in documents_dir.iterdir() if p.suffix in {".pdf", ".docx"})
    with system.client() as client:
        ids = {path.name: system.upload(client, path)["id"] for path in paths}
        final = system.wait_final(client, list(ids.values()), timeout=600)
    embedded = {name for name, i in ids.items() if final[i]["status"] == "embedded"}
    assert {answer for answer, _ in QUESTIONS.values()} <= embedded
    assert final[ids["password-example.pdf"]]["status"] == "failed"
    head = system.container.documents.head_position()
    assert system.container.search_view.wait_for("documents", head, 60)
    assert system.container.fulltext.wait_for("documents", head, 60)
    return ids


@pytest.mark.parametrize("question", list(QUESTIONS))
def test_every_citation_is_a_chunk_of_the_answering_document_with_the_answer_terms(
    system: RunningSystem, library: dict[str, str], question: str
) -> None:
    filename, terms = QUESTIONS[question]
    with system.client() as client:
        conversation = client.post("/v1/conversations", json={}).json()["id"]
        response = client.post(
            f"/v1/conversations/{conversation}/questions", json={"question": question}
        )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["citations"], answer["answer"]
    for citation in answer["citations"]:
        where = f"{citation['filename']} chunk {citation['chunk_index']}"
        assert citation["document_id"] == library[filename], f"{question!r} cited {where}"
        assert citation["filename"] == filename
        text = citation["text"].lower()
        assert all(term in text for term in terms), f"{where} lacks {terms}: {text[:300]}"
        assert f"[{citation['n']}]" in answer["answer"]
        if filename.endswith(".pdf"):
            assert citation["page"] is not None and citation["page"] >= 1
