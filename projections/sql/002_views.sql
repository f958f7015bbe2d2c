-- Analytics over the runs: views (and the table macros behind them, which take a start
-- time), made again each time the file is opened, so a rebuilt or swapped file has them.
-- They derive nothing the fold does not: every figure is a count, sum or quantile of rows.
--
-- run_stats_by_model, run_stats_by_list, run_stats_by_day (one row per model, list, UTC day
-- of the run's start; `run_stats_by_X_since(TIME)` counts only the runs started at or after
-- TIME). Their columns after the key:
--   runs                    runs started
--   finished_runs           runs that ended (RunFinished)
--   succeeded_runs          runs that ended with success
--   failed_runs             runs that ended without
--   success_rate            succeeded_runs / finished_runs (NULL: none ended)
--   retries                 automatic retries among the runs
--   continues               continues among the runs
--   failure_causes          MAP cause -> failed runs (`failure_causes` has it as rows)
--   tokens_in, tokens_out, cache_read_tokens, cache_creation_tokens: sums over the runs
--   cost_usd                sum of the runs' cost
--   tasks                   tasks with a run here
--   done_tasks              those of them whose status is done
--   cost_per_done_task_usd  cost_usd / done_tasks: what the runs of these tasks (first runs,
--                           retries, continues, and the failed tasks' runs too) cost per task
--                           that ended done (NULL: none did). A task whose runs fall into two
--                           rows (two days, two models) counts in both.
--   p50_duration_ms, p95_duration_ms: a finished run's wall time, RunStarted to RunFinished
--   p50_queue_wait_ms, p95_queue_wait_ms: from the task's queueing (TaskQueued, TaskRequeued)
--                           to the start of the run that took it; the automatic retry, started
--                           by its slot right after the run before, did not wait and is left out

-- One row per run with what it is grouped by and its derived times.
CREATE OR REPLACE VIEW run_facts AS
SELECT
    r.task_id,
    r.run_number,
    t.list_id,
    l.name AS list_name,
    r.model,
    CAST(timezone('UTC', r.started_at) AS DATE) AS day,
    r.queued_at,
    r.started_at,
    r.finished_at,
    r.success,
    r.is_retry,
    r.is_continue,
    CASE WHEN r.success = false THEN coalesce(r.cause, 'unknown') END AS failure_cause,
    r.tokens_in,
    r.tokens_out,
    r.cache_read_tokens,
    r.cache_creation_tokens,
    r.cost_usd,
    epoch_ms(r.finished_at) - epoch_ms(r.started_at) AS duration_ms,
    epoch_ms(r.started_at) - epoch_ms(r.queued_at) AS queue_wait_ms,
    t.status AS task_status
FROM runs r
JOIN tasks t ON t.id = r.task_id
LEFT JOIN lists l ON l.id = t.list_id;

-- The figures of runs started at or after `since` (NULL: all), grouped by `dimension`
-- ('model', 'list' or 'day'), as `key` (text). The views below name and type the key.
CREATE OR REPLACE MACRO run_stats(dimension, since) AS TABLE
SELECT
    CASE dimension
        WHEN 'model' THEN model
        WHEN 'list' THEN list_id
        WHEN 'day' THEN CAST(day AS VARCHAR)
    END AS key,
    count(*) AS runs,
    count(finished_at) AS finished_runs,
    count(*) FILTER (WHERE success) AS succeeded_runs,
    count(*) FILTER (WHERE NOT success) AS failed_runs,
    succeeded_runs / nullif(finished_runs, 0) AS success_rate,
    count(*) FILTER (WHERE is_retry) AS retries,
    count(*) FILTER (WHERE is_continue) AS continues,
    coalesce(histogram(failure_cause) FILTER (WHERE failure_cause IS NOT NULL), MAP {})
        AS failure_causes,
    CAST(coalesce(sum(tokens_in), 0) AS BIGINT) AS tokens_in,
    CAST(coalesce(sum(tokens_out), 0) AS BIGINT) AS tokens_out,
    CAST(coalesce(sum(cache_read_tokens), 0) AS BIGINT) AS cache_read_tokens,
    CAST(coalesce(sum(cache_creation_tokens), 0) AS BIGINT) AS cache_creation_tokens,
    coalesce(sum(cost_usd), 0) AS cost_usd,
    count(DISTINCT task_id) AS tasks,
    count(DISTINCT task_id) FILTER (WHERE task_status = 'done') AS done_tasks,
    coalesce(sum(cost_usd), 0) / nullif(done_tasks, 0) AS cost_per_done_task_usd,
    quantile_cont(duration_ms, 0.5) AS p50_duration_ms,
    quantile_cont(duration_ms, 0.95) AS p95_duration_ms,
    quantile_cont(queue_wait_ms, 0.5) AS p50_queue_wait_ms,
    quantile_cont(queue_wait_ms, 0.95) AS p95_queue_wait_ms
FROM run_facts
WHERE since IS NULL OR started_at >= since
GROUP BY key;

CREATE OR REPLACE MACRO run_stats_by_model_since(since) AS TABLE
SELECT key AS model, * EXCLUDE (key) FROM run_stats('model', since) ORDER BY model NULLS LAST;

CREATE OR REPLACE MACRO run_stats_by_list_since(since) AS TABLE
SELECT s.key AS list_id, l.name AS list_name, s.* EXCLUDE (key)
FROM run_stats('list', since) s
LEFT JOIN lists l ON l.id = s.key
ORDER BY list_name, list_id;

CREATE OR REPLACE MACRO run_stats_by_day_since(since) AS TABLE
SELECT CAST(key AS DATE) AS day, * EXCLUDE (key) FROM run_stats('day', since) ORDER BY day;

CREATE OR REPLACE VIEW run_stats_by_model AS FROM run_stats_by_model_since(NULL);
CREATE OR REPLACE VIEW run_stats_by_list AS FROM run_stats_by_list_since(NULL);
CREATE OR REPLACE VIEW run_stats_by_day AS FROM run_stats_by_day_since(NULL);

-- Failed runs counted per cause, by UTC day, list and model: group it as you need
-- (`SELECT cause, sum(runs) FROM failure_causes GROUP BY cause`).
CREATE OR REPLACE VIEW failure_causes AS
SELECT day, list_id, list_name, model, failure_cause AS cause, count(*) AS runs
FROM run_facts
WHERE failure_cause IS NOT NULL
GROUP BY ALL
ORDER BY day, list_name, model NULLS LAST, runs DESC, cause;
