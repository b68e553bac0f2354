#!/bin/bash
# poormanci: merge a Pagure pull request onto its target branch before the
# tests run. Jenkins has already checked out the project (remote "origin");
# poormanci triggers the job with REPO (the PR's repository), BRANCH (its
# branch), BRANCH_TO (the target, default master) and COMMIT (the PR's commit
# poormanci decided to build, when it knows it).
#
# With COMMIT, exactly that commit is merged, not whatever BRANCH points at
# when the job runs (a push in between would otherwise be tested under the
# older commit's flag): it must be the tip of BRANCH or reachable from it.
#
# The values come from whoever opened the PR, so they are checked before git
# sees them, and every git call below puts them after `--` or behind
# "refs/..." so none can be read as an option.
#
# Exit: 0 merged (or nothing to merge), 1 the PR does not merge cleanly,
# 2 refused input (or COMMIT not on BRANCH), other: a git step failed
# (unreachable repo, no such branch).
set -euo pipefail

REPO="${REPO:-}"
BRANCH="${BRANCH:-}"
BRANCH_TO="${BRANCH_TO:-}"
BRANCH_TO="${BRANCH_TO:-master}"
COMMIT="${COMMIT:-}"

refuse() {
    printf 'merge-pr: refused: %s\n' "$1" >&2
    exit 2
}

# A normal branch build (push to master, manual build): test what Jenkins
# checked out.
if [ -z "$REPO" ] && [ -z "$BRANCH" ]; then
    [ -z "$COMMIT" ] || refuse "COMMIT is set but REPO and BRANCH are empty"
    echo "merge-pr: no pull request given; testing $(git rev-parse HEAD) as checked out"
    exit 0
fi
[ -n "$REPO" ] || refuse "BRANCH is set but REPO is empty"
[ -n "$BRANCH" ] || refuse "REPO is set but BRANCH is empty"

check_branch() { # NAME VALUE
    case "$2" in
        -*) refuse "$1 starts with '-'" ;;
    esac
    # git's own rules (no "..", spaces, control characters, "@{", ...).
    # --branch also expands "@{-1}" into a name: require it unchanged.
    local out
    out="$(git check-ref-format --branch "$2" 2>/dev/null)" || refuse "$1 is not a valid branch name"
    [ "$out" = "$2" ] || refuse "$1 is not a valid branch name"
}
check_branch BRANCH "$BRANCH"
check_branch BRANCH_TO "$BRANCH_TO"

# Only network URLs: no local paths (they would read the Jenkins host's
# files), no "ext::" (runs a command), no option-looking values, no
# whitespace or control characters.
url_re='^(https?|git)://[^[:space:][:cntrl:]]+$'
[[ "$REPO" =~ $url_re ]] || refuse "REPO must be an https://, http:// or git:// URL"

# A full object name (SHA-1 or SHA-256), nothing git could read otherwise.
hash_re='^([0-9a-f]{40}|[0-9a-f]{64})$'
[ -z "$COMMIT" ] || [[ "$COMMIT" =~ $hash_re ]] || refuse "COMMIT must be a full commit hash"

# The merge commit needs an identity; a Jenkins agent often has none.
# Only fill in what is missing, so a configured identity wins.
ident=()
git config user.name >/dev/null || ident+=(-c user.name=poormanci)
git config user.email >/dev/null || ident+=(-c user.email=poormanci@localhost)

# Second line of defence behind the URL check: git may only speak these
# transports for this fetch (ext:: is never allowed, whatever the config).
allow=(-c protocol.allow=never -c protocol.https.allow=always
       -c protocol.http.allow=always -c protocol.git.allow=always)

git remote remove proposed 2>/dev/null || true
git remote add proposed -- "$REPO"
git "${allow[@]}" fetch --quiet --no-tags proposed -- "+refs/heads/$BRANCH:refs/remotes/proposed/$BRANCH"
branch_tip="$(git rev-parse --verify "refs/remotes/proposed/$BRANCH^{commit}")"
pr_tip="$branch_tip"
if [ -n "$COMMIT" ]; then
    # Fails too when the commit was not fetched: BRANCH was rewritten since.
    git merge-base --is-ancestor "$COMMIT" "$branch_tip" 2>/dev/null \
        || refuse "COMMIT $COMMIT is not on BRANCH $BRANCH (tip $branch_tip): rewritten since the build was asked for?"
    pr_tip="$COMMIT"
fi

git -c advice.detachedHead=false checkout --detach "refs/remotes/origin/$BRANCH_TO" --
base="$(git rev-parse HEAD)"

if ! git "${ident[@]}" merge --no-ff --no-edit -m "Merge PR" \
        -m "Merge $BRANCH from $REPO into $BRANCH_TO" "$pr_tip"; then
    git merge --abort || true
    echo "merge-pr: $BRANCH ($pr_tip) does not merge cleanly into $BRANCH_TO ($base)" >&2
    exit 1
fi

echo "merge-pr: PR commit  $pr_tip ($REPO $BRANCH, tip $branch_tip)"
echo "merge-pr: onto       $base (origin/$BRANCH_TO)"
echo "merge-pr: under test $(git rev-parse HEAD)"
