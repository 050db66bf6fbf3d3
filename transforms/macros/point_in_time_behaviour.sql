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

-- The user's distinct queries before each probe, by their latest use
prior_queries as (

    select
        {{ probes }}.probe_id,
        history_requests.query,
        max(history_requests.request_time) as last_used_at

    from {{ probes }}
    inner join history_requests
        on history_requests.user_id = {{ probes }}.user_id
       and history_requests.request_time < {{ probes }}.as_of
       and history_requests.request_time >= {{ probes }}.as_of - interval {{ limits.history_days }} day

    group by {{ probes }}.probe_id, history_requests.query

),

query_lists as (

    select
        probe_id,
        list(query order by recency_rank desc) as past_queries

    from (
        select
            *,
            row_number() over (
                partition by probe_id
                order by last_used_at desc, query desc
            ) as recency_rank
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
