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

-- The user's actions strictly before each probe, ranked by recency per action type
prior_actions as (

    select
        {{ probes }}.probe_id,
        history_actions.event_type,
        history_actions.item_id,
        history_actions.shop,
        history_actions.leaf_category,
        history_actions.brand,
        history_actions.event_time
            >= {{ probes }}.as_of - interval {{ limits.short_term_days }} day as is_short_term,
        row_number() over (
            partition by {{ probes }}.probe_id, history_actions.event_type
            order by
                history_actions.event_time desc,
                history_actions.request_id desc,
                history_actions.item_id desc
        ) as recency_rank  -- 1 = the most recent action of its type

    from {{ probes }}
    inner join history_actions
        on history_actions.user_id = {{ probes }}.user_id
       and history_actions.event_time < {{ probes }}.as_of
       and history_actions.event_time >= {{ probes }}.as_of - interval {{ limits.history_days }} day

    qualify recency_rank <= {{ [limits.rt_len + limits.st_len, limits.lt_len] | max }}

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
