"""One place decides what a user error is (involution_mm/user_errors.py): every tool reports one in one
``error:`` line with exit status 2, Ctrl-C in one line with 130, and only our own bugs show a traceback."""
import pytest

from involution_mm.checkpoint import CheckpointError
from involution_mm.convert import ConversionError, UnknownConversionError
from involution_mm.export import ExportError
from involution_mm.output_files import OutputExistsError, OutputPathError
from involution_mm.upstream import ConfigError
from involution_mm.user_errors import MissingFileError, UserError, run_tool


def raising(error: BaseException):

    def main(argv):
        raise error

    return main


@pytest.mark.parametrize('error, line', [
    (ConfigError('config x.py does not exist'), 'error: config x.py does not exist\n'),
    (UnknownConversionError("no conversion of 'x' to 'mmdet'"), "error: no conversion of 'x' to 'mmdet'\n"),
    (MissingFileError('x.pth can not be found.'), 'error: x.pth can not be found.\n'),
])
def test_a_user_error_is_one_line_and_exit_status_2(capsys, error, line):
    assert run_tool(raising(error)) == 2
    captured = capsys.readouterr()
    assert captured.err == line and captured.out == ''


def test_ctrl_c_is_one_line_and_exit_status_130(capsys):
    assert run_tool(raising(KeyboardInterrupt()), interrupted='interrupted; nothing was written') == 130
    assert capsys.readouterr().err == 'interrupted; nothing was written\n'
    assert run_tool(raising(KeyboardInterrupt('interrupted after writing x.onnx'))) == 130
    assert capsys.readouterr().err == 'interrupted after writing x.onnx\n'


@pytest.mark.parametrize('bug', [TypeError('unsupported operand'), KeyError('x'), ValueError('bad value'),
                                 RuntimeError('CUDA error')])
def test_anything_else_is_a_bug_and_keeps_its_traceback(bug):
    with pytest.raises(type(bug)):
        run_tool(raising(bug))


def test_statuses_of_main_pass_through():
    assert run_tool(lambda argv: None) == 0
    assert run_tool(lambda argv: 3) == 3
    assert run_tool(lambda argv: len(argv), ['a', 'b']) == 2


@pytest.mark.parametrize('error, builtin', [
    (ConfigError, ValueError), (CheckpointError, RuntimeError), (OutputPathError, ValueError),
    (OutputExistsError, FileExistsError), (MissingFileError, FileNotFoundError), (ExportError, RuntimeError),
    (ConversionError, ValueError), (UnknownConversionError, KeyError),
])
def test_our_errors_are_user_errors_and_keep_their_builtin_type(error, builtin):
    assert issubclass(error, UserError) and issubclass(error, builtin)
