"""--help as an editor reads it: paragraphs wrapped at the terminal, GIPHY's bracketed ids intact."""
from __future__ import annotations

from typer.testing import CliRunner

from labeling.cli import app

runner = CliRunner()


def _paragraph(output: str, first_words: str) -> list[str]:
    lines = [line.strip() for line in output.splitlines()]
    start = next(i for i, line in enumerate(lines) if line.startswith(first_words))
    end = next(i for i in range(start, len(lines)) if not lines[i])
    return lines[start:end]


def test_a_docstring_paragraph_is_filled_to_the_terminal_width_not_broken_where_the_source_wraps():
    result = runner.invoke(app, ["retrain", "--help"], env={"TERMINAL_WIDTH": "80"})
    assert result.exit_code == 0, result.output
    paragraph = _paragraph(result.output, "Both models are saved")
    assert len(paragraph) >= 2
    assert all(len(line) > 60 for line in paragraph[:-1]), paragraph


def test_bracketed_freebase_ids_in_help_are_printed_not_taken_for_markup():
    result = runner.invoke(app, ["import", "--help"], env={"TERMINAL_WIDTH": "120"})
    assert result.exit_code == 0, result.output
    assert "Brad_Pitt_[m.0c6qh]" in result.output
