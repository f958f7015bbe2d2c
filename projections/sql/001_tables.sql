-- The projection: what is true now, derived from the event log and rebuildable from it.
-- No indexes: every table is scanned columnar; deletes and bulk inserts stay cheap.

CREATE TABLE IF NOT EXISTS projection_checkpoint (
    name VARCHAR NOT NULL,           -- always 'main'
    seq BIGINT NOT NULL              -- last stream sequence applied, written with its rows
);

CREATE TABLE IF NOT EXISTS projection_format (
    version INTEGER NOT NULL         -- projections.store.FORMAT_VERSION of the file's tables
);

CREATE TABLE IF NOT EXISTS lists (
    id VARCHAR NOT NULL,
    name VARCHAR NOT NULL,
    dir VARCHAR,
    model VARCHAR,
    system_prompt VARCHAR,
    agent_path VARCHAR,
    permission_mode VARCHAR,
    allowed_tools VARCHAR[],
    max_budget_usd DOUBLE,
    max_turns INTEGER,
    timeout_s DOUBLE,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    last_seq BIGINT NOT NULL,
    -- put away (ListArchived) or deleted (ListDeleted) by the user: hidden by default
    archived_at TIMESTAMPTZ,
    deleted_at TIMESTAMPTZ
);

CREATE TABLE IF NOT EXISTS tasks (
    id VARCHAR NOT NULL,
    list_id VARCHAR NOT NULL,
    title VARCHAR NOT NULL,
    description VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    model VARCHAR,
    system_prompt VARCHAR,
    agent_path VARCHAR,
    permission_mode VARCHAR,
    allowed_tools VARCHAR[],
    max_budget_usd DOUBLE,
    max_turns INTEGER,
    timeout_s DOUBLE,
    result VARCHAR,
    error VARCHAR,
    cause VARCHAR,
    cancel_requested BOOLEAN NOT NULL,
    follow_up_prompt VARCHAR,
    claimed_by VARCHAR,
    slot INTEGER,
    run_count INTEGER NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    queued_at TIMESTAMPTZ,
    started_at TIMESTAMPTZ,
    finished_at TIMESTAMPTZ,
    last_seq BIGINT NOT NULL,
    runs_before_attempt INTEGER NOT NULL,
    review VARCHAR,                   -- 'merge' or 'discard' under way
    review_node VARCHAR,
    -- put away (TaskArchived) or deleted (TaskDeleted) by the user: hidden by default
    archived_at TIMESTAMPTZ,
    deleted_at TIMESTAMPTZ
);

CREATE TABLE IF NOT EXISTS subtasks (
    task_id VARCHAR NOT NULL,
    subtask_id VARCHAR NOT NULL,
    position INTEGER NOT NULL,
    title VARCHAR NOT NULL,
    done BOOLEAN NOT NULL
);

CREATE TABLE IF NOT EXISTS runs (
    task_id VARCHAR NOT NULL,
    run_number INTEGER NOT NULL,
    is_retry BOOLEAN NOT NULL,
    is_continue BOOLEAN NOT NULL,
    node_id VARCHAR NOT NULL,
    slot INTEGER NOT NULL,
    workdir VARCHAR NOT NULL,
    prompt VARCHAR NOT NULL,
    resume_session_id VARCHAR,
    session_id VARCHAR,
    pid INTEGER,
    success BOOLEAN,
    exit_code INTEGER,
    cause VARCHAR,
    turn_count INTEGER,
    tokens_in BIGINT,
    tokens_out BIGINT,
    cache_read_tokens BIGINT,
    cache_creation_tokens BIGINT,
    cost_usd DOUBLE,
    duration_ms BIGINT,
    api_error_status INTEGER,
    cli_version VARCHAR,
    model VARCHAR,
    permission_mode VARCHAR,
    result VARCHAR,
    error VARCHAR,
    structured_output JSON,
    log_path VARCHAR,
    line_count BIGINT,
    transcript_sha256 VARCHAR,
    started_at TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ,
    terminal_reason VARCHAR,
    permission_denials JSON,
    queued_at TIMESTAMPTZ              -- the queueing this run waited from (None: it did not)
);

CREATE TABLE IF NOT EXISTS worktrees (
    task_id VARCHAR NOT NULL,
    kind VARCHAR NOT NULL,             -- 'worktree' or 'sandbox'
    path VARCHAR NOT NULL,
    branch VARCHAR,
    base_branch VARCHAR,
    base_commit VARCHAR,
    head_commit VARCHAR,
    status VARCHAR NOT NULL,           -- 'active', 'merged', 'discarded'
    commit_count BIGINT NOT NULL,
    files_changed BIGINT NOT NULL,
    insertions BIGINT NOT NULL,
    deletions BIGINT NOT NULL,
    merge_commit VARCHAR,
    kept_ref VARCHAR,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    repo VARCHAR                       -- the repository's real path (None: recorded before)
);

-- One row per event, flat, for analytics.
CREATE TABLE IF NOT EXISTS events (
    seq BIGINT NOT NULL,
    event_id VARCHAR NOT NULL,
    subject VARCHAR NOT NULL,
    type VARCHAR NOT NULL,
    schema_version INTEGER NOT NULL,
    aggregate VARCHAR NOT NULL,
    aggregate_id VARCHAR NOT NULL,
    task_id VARCHAR,
    list_id VARCHAR,
    occurred_at TIMESTAMPTZ NOT NULL,
    node VARCHAR NOT NULL,
    actor VARCHAR NOT NULL,
    correlation_id VARCHAR NOT NULL,
    payload JSON NOT NULL
);

-- Messages on the event subjects that are not ClaudeDo events, kept so nothing is silent.
CREATE TABLE IF NOT EXISTS skipped_messages (
    seq BIGINT NOT NULL,
    subject VARCHAR NOT NULL,
    reason VARCHAR NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL
);
