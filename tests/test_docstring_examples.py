"""Every public name (``pyrovae.__all__``) has a docstring with an
``Example::`` section, and that example runs as a doctest and prints what
it says it prints.

Examples compare with ``ELLIPSIS`` (``...`` matches anything, for paths in
messages) and ``NORMALIZE_WHITESPACE``. Each runs in its own namespace, so
it imports what it uses, as a reader copying it would. The
``register_*`` functions are the bound ``Registry.register`` of their
registries and share its docstring; its example unregisters what it
registers, so it can run once per name.
"""

import doctest
import inspect

import pytest

import pyrovae

FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def docstring_tests(name):
    obj = getattr(pyrovae, name)
    return doctest.DocTestFinder(recurse=False).find(obj, f"pyrovae.{name}", globs={})


@pytest.mark.parametrize("name", pyrovae.__all__)
def test_public_name_has_an_example(name):
    doc = inspect.getdoc(getattr(pyrovae, name)) or ""
    assert "Example::" in doc, f"pyrovae.{name}'s docstring has no Example:: section"
    example = doc.split("Example::", 1)[1]
    assert ">>>" in example, f"pyrovae.{name}'s Example:: is not written as a doctest (>>> prompts)"


@pytest.mark.parametrize("name", pyrovae.__all__)
def test_docstring_example_runs(name):
    tests = docstring_tests(name)
    assert tests and any(t.examples for t in tests), f"pyrovae.{name} has no doctest examples"
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    report = []
    for test in tests:
        runner.run(test, out=report.append)
    assert runner.failures == 0, "".join(report)


def test_a_failing_example_is_reported():
    """The check above can fail: a docstring whose output is wrong is caught."""

    def wrong():
        """Example::

            >>> 1 + 1
            3
        """

    (test,) = doctest.DocTestFinder(recurse=False).find(wrong, "wrong", globs={})
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    runner.run(test, out=lambda text: None)
    assert runner.failures == 1
