"""The chat UI's endpoint list and the terminal chat's commands, as plain functions."""

from __future__ import annotations

from streamhost.chat import CHAT_COMMANDS, chat_command, help_text
from streamhost.endpoints.discovery import EndpointInfo
from streamhost.ui.choice import choose_endpoints, markdown_text, moved_notice, not_ready_line

FAILED = EndpointInfo(
    "broken_model",
    "Failed",
    failure_reason=(
        "Instance alltraffic-1 of variant AllTraffic could not load its model: ModelLoadError: "
        "model folder /m/x does not exist. Last log lines: a | b | c"
    ),
)
CREATING = EndpointInfo("new", "Creating")
READY = [EndpointInfo("chat", "InService"), EndpointInfo("default", "InService")]
# A scaling activity or an UpdateEndpoint: the running fleet serves until the new one takes over.
SCALING = EndpointInfo("scaling", "Updating")


def test_only_endpoints_that_take_invocations_can_be_chosen_and_the_rest_are_listed() -> None:
    choice = choose_endpoints([READY[0], FAILED, CREATING, READY[1], SCALING])
    assert choice.names == ["chat", "default", "scaling"]
    assert [info.name for info in choice.not_ready] == ["broken_model", "new"]


def test_an_endpoint_being_scaled_keeps_its_conversation() -> None:
    assert moved_notice("scaling", [READY[0], SCALING], "scaling") is None
    assert moved_notice("scaling", [READY[0], SCALING], "chat") is None  # chosen by the user


def test_the_preferred_endpoint_is_preselected_else_the_first() -> None:
    choice = choose_endpoints(READY)
    assert choice.index("default") == 1
    assert choice.index("gone") == 0


def test_a_failed_endpoint_is_marked_with_the_cause_of_its_failure_short() -> None:
    assert not_ready_line(FAILED) == (
        r"**broken\_model** · Failed: an instance could not load its model: ModelLoadError: "
        r"model folder /m/x does not exist"
    )
    assert not_ready_line(CREATING) == "**new** · Creating"


def test_a_long_failure_is_cut_for_the_sidebar() -> None:
    info = EndpointInfo("x", "Failed", failure_reason="could not load: " + "y" * 500)
    assert len(not_ready_line(info)) < 200 and not_ready_line(info).endswith("…")


def test_markdown_in_names_and_reasons_shows_as_written() -> None:
    assert markdown_text("a_b*c`d$e") == r"a\_b\*c\`d\$e"


def test_a_deleted_endpoint_says_where_the_conversation_continues() -> None:
    notice = moved_notice("chat", READY[1:], "default")
    assert notice == (
        "Endpoint **chat** no longer exists: the conversation now continues with **default**."
    )


def test_an_endpoint_that_failed_says_its_status() -> None:
    failed_chat = EndpointInfo("chat", "Failed")
    assert "is Failed" in (moved_notice("chat", [failed_chat, READY[1]], "default") or "")


def test_nothing_moved_is_no_notice() -> None:
    assert moved_notice(None, READY, "chat") is None  # the first run
    assert moved_notice("chat", READY, "chat") is None
    assert moved_notice("chat", READY, "default") is None  # chosen by the user: chat serves


def test_slash_words_are_commands_and_paths_are_messages() -> None:
    assert chat_command("/help") == "/help"
    assert chat_command("  /NEW ") == "/new"
    assert chat_command("/x") == "/x"
    assert chat_command("/usr/bin is a folder?") is None
    assert chat_command("what is /help?") is None
    assert chat_command("") is None


def test_help_lists_every_command() -> None:
    text = help_text()
    assert all(name in text for name in CHAT_COMMANDS)
    assert len(text.splitlines()) == len(CHAT_COMMANDS)
