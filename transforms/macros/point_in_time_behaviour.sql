{#-
    The point-in-time behaviour lists of docs/contracts.md, as a chain of CTEs ending in one
    named `behaviour` (probe_id + the 14 lists, oldest first, never NULL).

    `probes` names a CTE of the calling model with columns (probe_id, user_id, as_of): for each
    probe, only the user's events with event_time < as_of (strictly before) and at most 30
    days old are used. History is read from [ds - 30 days, ds] only, so a day's cost does not
    grow with the total history.

    Usage:  with probes as (...), {{ point_in_time_behaviour('probes') }} select ... from behaviour
-#}
{% macro point_in_time_behaviour(probes) -%}

{%- set limits = behaviour_limits() %}
{%- set attributes = behaviour_attributes() %}
{%- set history_start = "cast(" ~ ds_date() ~ " - interval " ~ limits.history_days ~ " day as date)" %}

history_actions as (

    select * from {{ ref('int_user_actions') }}
    where ds between {{ history_start }} and {{ ds_date() }}

),

history_requests as (

    select
        user_id,
        request_time,
        query

    from {{ ref('int_requests') }}
    where ds between {{ history_start }} and {{ ds_date() }}
      and query <> ''

),

-- Each user's actions of each type numbered in time (ties as the recency order breaks them)
numbered_actions as (

    select
        *,
        row_number() over (
            partition by user_id, event_type
            order by event_time, request_id, item_id
        ) as seq

    from history_actions

),

-- The last number at each time: an ASOF join on it finds a probe's position in the history
numbered_times as (

    select
        user_id,
        event_type,
        event_time,
        max(seq) as seq

    from numbered_actions
    group by user_id, event_type, event_time

),

probe_types as (

    select {{ probes }}.*, action_types.event_type
    from {{ probes }}
    cross join (
        values {%- for action in behaviour_actions() %} ('{{ action }}'){{ ',' if not loop.last }}{% endfor %}
    ) as action_types (event_type)

),

-- Per probe and type: the number of its last action strictly before as_of (last) and of its
-- last one over 30 days old (too_old, 0 if none)
probe_positions as (

    select
        probe_types.probe_id,
        probe_types.user_id,
        probe_types.event_type,
        probe_types.as_of,
        before.seq as last,
        coalesce(too_old.seq, 0) as too_old

    from probe_types
    asof inner join numbered_times as before
        on before.user_id = probe_types.user_id
       and before.event_type = probe_types.event_type
       and probe_types.as_of > before.event_time
    asof left join numbered_times as too_old
        on too_old.user_id = probe_types.user_id
       and too_old.event_type = probe_types.event_type
       and probe_types.as_of - interval {{ limits.history_days }} day > too_old.event_time

),

-- The user's actions strictly before each probe, ranked by recency per action type: the
-- positions last, last - 1, ... (as many as the longest list keeps, none over 30 days old)
-- looked up by number. Joining each probe to all of its user's history instead costs
-- requests x history per user: quadratic in a heavy user (docs/scale-out.md).
prior_actions as (

    select
        positions.probe_id,
        numbered_actions.event_type,
        numbered_actions.item_id,
        numbered_actions.shop,
        numbered_actions.leaf_category,
        numbered_actions.brand,
        numbered_actions.event_time
            >= positions.as_of - interval {{ limits.short_term_days }} day as is_short_term,
        positions.last - numbered_actions.seq + 1 as recency_rank  -- 1 = the most recent

    from (
        select
            *,
            unnest(generate_series(
                greatest(too_old + 1, last - {{ [limits.rt_len + limits.st_len, limits.lt_len] | max }} + 1),
                last
            )) as seq
        from probe_positions
    ) as positions
    inner join numbered_actions
        on numbered_actions.user_id = positions.user_id
       and numbered_actions.event_type = positions.event_type
       and numbered_actions.seq = positions.seq

),

action_lists as (

    select
        probe_id,

        -- real time: the latest clicks
        list(item_id order by recency_rank desc) filter (
            where event_type = 'click'
              and recency_rank <= {{ limits.rt_len }}
        ) as rt_items,

        -- short term: the clicks past the real-time window, within the last 10 days
        list(item_id order by recency_rank desc) filter (
            where event_type = 'click'
              and recency_rank > {{ limits.rt_len }}
              and recency_rank <= {{ limits.rt_len + limits.st_len }}
              and is_short_term
        ) as st_items,

        -- long term: attributes of the items acted on, per action (duplicates kept)
        {%- for action in behaviour_actions() %}
        {%- set outer_last = loop.last %}
        {%- for attr, column in attributes.items() %}
        list({{ column }} order by recency_rank desc) filter (
            where event_type = '{{ action }}'
              and recency_rank <= {{ limits.lt_len }}
        ) as lt_{{ action }}_{{ attr }}{{ ',' if not (outer_last and loop.last) }}
        {%- endfor %}
        {%- endfor %}

    from prior_actions
    group by probe_id

),

-- Each user's requests numbered in time (ties as the recency order breaks them: by query)
numbered_requests as (

    select
        *,
        row_number() over (partition by user_id order by request_time, query) as seq

    from history_requests

),

numbered_request_times as (

    select
        user_id,
        request_time,
        max(seq) as seq

    from numbered_requests
    group by user_id, request_time

),

-- Per probe: the number of its user's last request strictly before as_of (last), of the last
-- one over 30 days old (too_old, 0 if none), and the first of its look-back window
query_positions as (

    select
        *,
        greatest(too_old + 1, last - {{ limits.past_query_lookback }} + 1) as first

    from (
        select
            {{ probes }}.probe_id,
            {{ probes }}.user_id,
            {{ probes }}.as_of,
            before.seq as last,
            coalesce(too_old.seq, 0) as too_old

        from {{ probes }}
        asof inner join numbered_request_times as before
            on before.user_id = {{ probes }}.user_id
           and {{ probes }}.as_of > before.request_time
        asof left join numbered_request_times as too_old
            on too_old.user_id = {{ probes }}.user_id
           and {{ probes }}.as_of - interval {{ limits.history_days }} day > too_old.request_time
    )

),

-- The distinct queries of each probe's look-back window, by their latest use (seq). Joining
-- each probe to all of its user's past requests instead is quadratic in a heavy user.
window_queries as (

    select
        positions.probe_id,
        numbered_requests.query,
        max(numbered_requests.seq) as last_seq

    from (
        select *, unnest(generate_series(first, last)) as seq
        from query_positions
    ) as positions
    inner join numbered_requests
        on numbered_requests.user_id = positions.user_id
       and numbered_requests.seq = positions.seq

    group by positions.probe_id, numbered_requests.query

),

-- Probes whose window neither covers their 30 days nor holds enough distinct queries: users
-- who repeat a few queries over and over. Their lists come from each of the user's distinct
-- queries, looked up at its last use before the probe.
unsettled_probes as (

    select query_positions.*
    from query_positions
    left join (
        select probe_id, count(*) as distinct_queries
        from window_queries
        group by probe_id
    ) as counts
        on counts.probe_id = query_positions.probe_id

    where query_positions.first > query_positions.too_old + 1
      and coalesce(counts.distinct_queries, 0) < {{ limits.past_queries }}

),

repeated_queries as (

    select
        probe_queries.probe_id,
        probe_queries.query,
        last_use.seq as last_seq

    from (
        select unsettled_probes.*, user_queries.query
        from unsettled_probes
        inner join (select distinct user_id, query from numbered_requests) as user_queries
            on user_queries.user_id = unsettled_probes.user_id
    ) as probe_queries
    asof inner join numbered_requests as last_use
        on last_use.user_id = probe_queries.user_id
       and last_use.query = probe_queries.query
       and probe_queries.as_of > last_use.request_time

    where last_use.seq > probe_queries.too_old

),

-- The same (probe, query, last use) can come from both: union removes the repeat
prior_queries as (

    select * from window_queries
    union
    select * from repeated_queries

),

query_lists as (

    select
        probe_id,
        list(query order by last_seq) as past_queries

    from (
        select
            *,
            row_number() over (partition by probe_id order by last_seq desc) as recency_rank
        from prior_queries
    )
    where recency_rank <= {{ limits.past_queries }}
    group by probe_id

),

behaviour as (

    select
        {{ probes }}.probe_id,
        {%- for column in behaviour_list_columns() %}
        coalesce({{ column }}, []::varchar[]) as {{ column }}{{ ',' if not loop.last }}
        {%- endfor %}

    from {{ probes }}
    left join action_lists
        on action_lists.probe_id = {{ probes }}.probe_id
    left join query_lists
        on query_lists.probe_id = {{ probes }}.probe_id

)

{%- endmacro %}
