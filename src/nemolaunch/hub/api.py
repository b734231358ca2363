"""The Hub's URLs, and its client's errors as the one-line errors nemolaunch reports."""

from __future__ import annotations

from urllib.parse import quote

from nemolaunch.errors import (
    GatedRepoNeedsToken,
    GatedRepoNoAccess,
    HubListingChanged,
    HubRepoNotFound,
    HubRequestFailed,
    HubRevisionNotFound,
    HubUnreachable,
    NemolaunchError,
    first_line,
)


def resolve_url(endpoint: str, repo_id: str, commit: str, path: str) -> str:
    # Pinned to the commit, so every file comes from the same upload even if the branch moves meanwhile.
    return f"{endpoint}/{repo_id}/resolve/{quote(commit, safe='')}/{quote(path)}"


def translate(
    exc: Exception, *, repo_id: str, revision: str | None, endpoint: str, token: str | None, path: str = "?"
) -> NemolaunchError:
    """huggingface_hub's and httpx's errors, as the one-line errors nemolaunch reports."""
    import httpx2
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(exc, NemolaunchError):
        return exc
    if isinstance(exc, GatedRepoError):  # before RepositoryNotFoundError, its parent class
        url = f"{endpoint}/{repo_id}"
        return GatedRepoNoAccess(repo_id=repo_id, url=url) if token else GatedRepoNeedsToken(repo_id=repo_id, url=url)
    if isinstance(exc, RepositoryNotFoundError):
        return HubRepoNotFound(repo_id=repo_id, endpoint=endpoint)
    if isinstance(exc, RevisionNotFoundError):
        return HubRevisionNotFound(repo_id=repo_id, revision=revision)
    if isinstance(exc, RemoteEntryNotFoundError):
        # Only asked for files the listing named: the file went away since.
        return HubListingChanged(repo_id=repo_id, path=path, expected="a file", listed="none")
    if isinstance(exc, (OfflineModeIsEnabled, httpx2.RequestError)):
        return HubUnreachable(endpoint=endpoint, reason=first_line(exc))
    if isinstance(exc, HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else "an error"
        return HubRequestFailed(repo_id=repo_id, status=status, reason=first_line(exc))
    # Anything else the Hub client raised: still one line, never the exception as its own cause.
    return HubRequestFailed(repo_id=repo_id, status="an error", reason=first_line(exc))
