{#-
    The point-in-time behaviour lists of docs/contracts.md, as a chain of CTEs ending in one
    named `behaviour` (probe_id + the 14 lists, oldest first, never NULL).

    `probes` names a CTE of the calling model with columns (probe_id, user_id, as_of): for each
    probe, only the user's events with event_time < as_of (strictly before) and at most 30
    days old are used. History is read from [ds - 30 days, ds] only, so a day's cost does not
    grow with the total history.

    Each user's history is numbered in time and cut into blocks, lists of consecutive numbers;
    a probe finds its position by an ASOF join and reads the latest entries from its block and
    the one before. The work per probe is bounded by the lengths the contract keeps, however
    long its user's history: joining each probe to its user's whole history, as before, was
    quadratic in a heavy user (docs/scale-out.md).

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

{%- set action_block = [limits.rt_len + limits.st_len, limits.lt_len] | max %}
{%- set query_block = limits.past_query_lookback %}

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

-- Block b of a user's actions of a type: numbers block_size * b + 1 .. block_size * (b + 1),
-- oldest first. The latest block_size actions before any probe lie in two consecutive blocks.
action_blocks as (

    select
        user_id,
        event_type,
        (seq - 1) // {{ action_block }} as block,
        list_sort(list({
            'seq': seq,
            'event_time': event_time,
            'item_id': item_id,
            'shop': shop,
            'leaf_category': leaf_category,
            'brand': brand
        })) as actions

    from numbered_actions
    group by user_id, event_type, block

),
{%- for action in behaviour_actions() %}

-- The probes' latest {{ action }} actions, oldest first: as many as the longest list keeps, none
-- over 30 days old. `last` is the number of the last one strictly before as_of, `too_old` of
-- the last one over 30 days old (0 if none).
{{ action }}_actions as (

    select
        positions.probe_id,
        list_slice(
            list_concat(previous.actions, current.actions),
            greatest(positions.too_old + 1, positions.last - {{ action_block }} + 1) - positions.skipped,
            positions.last - positions.skipped
        ) as actions

    from (
        select
            {{ probes }}.probe_id,
            {{ probes }}.user_id,
            before.seq as last,
            coalesce(too_old.seq, 0) as too_old,
            (before.seq - 1) // {{ action_block }} as block,
            greatest((before.seq - 1) // {{ action_block }} - 1, 0) * {{ action_block }} as skipped

        from {{ probes }}
        asof inner join (select * from numbered_times where event_type = '{{ action }}') as before
            on before.user_id = {{ probes }}.user_id
           and {{ probes }}.as_of > before.event_time
        asof left join (select * from numbered_times where event_type = '{{ action }}') as too_old
            on too_old.user_id = {{ probes }}.user_id
           and {{ probes }}.as_of - interval {{ limits.history_days }} day > too_old.event_time
    ) as positions
    inner join action_blocks as current
        on current.user_id = positions.user_id
       and current.event_type = '{{ action }}'
       and current.block = positions.block
    left join action_blocks as previous
        on previous.user_id = positions.user_id
       and previous.event_type = '{{ action }}'
       and previous.block = positions.block - 1

),
{%- endfor %}

action_lists as (

    select
        {{ probes }}.probe_id,

        -- real time: the latest clicks
        list_transform(click_actions.actions[-{{ limits.rt_len }}:], lambda a: a.item_id) as rt_items,

        -- short term: the clicks past the real-time window, within the last 10 days
        list_transform(
            list_filter(
                click_actions.actions[-{{ limits.rt_len + limits.st_len }}:-{{ limits.rt_len + 1 }}],
                lambda a: a.event_time >= {{ probes }}.as_of - interval {{ limits.short_term_days }} day
            ),
            lambda a: a.item_id
        ) as st_items,

        -- long term: attributes of the items acted on, per action (duplicates kept)
        {%- for action in behaviour_actions() %}
        {%- set outer_last = loop.last %}
        {%- for attr, column in attributes.items() %}
        list_transform(
            {{ action }}_actions.actions[-{{ limits.lt_len }}:], lambda a: a.{{ column }}
        ) as lt_{{ action }}_{{ attr }}{{ ',' if not (outer_last and loop.last) }}
        {%- endfor %}
        {%- endfor %}

    from {{ probes }}
    {%- for action in behaviour_actions() %}
    left join {{ action }}_actions
        on {{ action }}_actions.probe_id = {{ probes }}.probe_id
    {%- endfor %}

),

-- Each user's requests numbered in time (ties as the recency order breaks them: by query),
-- each with the number of the user's next request for the same query: until then it is that
-- query's latest use
numbered_requests as (

    select
        *,
        lead(seq) over (partition by user_id, query order by seq) as next_use

    from (
        select
            *,
            row_number() over (partition by user_id order by request_time, query) as seq
        from history_requests
    )

),

numbered_request_times as (

    select
        user_id,
        request_time,
        max(seq) as seq

    from numbered_requests
    group by user_id, request_time

),

-- Blocks of a user's requests, as for actions: the look-back window lies in two of them
request_blocks as (

    select
        user_id,
        (seq - 1) // {{ query_block }} as block,
        list_sort(list({'seq': seq, 'query': query, 'next_use': next_use})) as requests

    from numbered_requests
    group by user_id, block

),

-- Per probe: its user's latest requests before as_of (the look-back window, none over 30 days
-- old) and, of those, each distinct query's latest use, oldest first
window_queries as (

    select
        positions.*,
        list_filter(
            list_slice(
                list_concat(previous.requests, current.requests),
                positions.first - positions.skipped,
                positions.last - positions.skipped
            ),
            lambda r: coalesce(r.next_use > positions.last, true)
        ) as latest_uses

    from (
        select
            *,
            greatest(too_old + 1, last - {{ query_block }} + 1) as first,
            (last - 1) // {{ query_block }} as block,
            greatest((last - 1) // {{ query_block }} - 1, 0) * {{ query_block }} as skipped

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
    ) as positions
    inner join request_blocks as current
        on current.user_id = positions.user_id
       and current.block = positions.block
    left join request_blocks as previous
        on previous.user_id = positions.user_id
       and previous.block = positions.block - 1

),

-- Probes whose window neither covers their 30 days nor holds enough distinct queries (users
-- who repeat a few queries over and over) take each of their user's distinct queries at its
-- last use before the probe instead
repeated_queries as (

    select
        probe_queries.probe_id,
        probe_queries.query,
        last_use.seq as last_seq

    from (
        select window_queries.*, user_queries.query
        from window_queries
        inner join (select distinct user_id, query from numbered_requests) as user_queries
            on user_queries.user_id = window_queries.user_id
        where window_queries.first > window_queries.too_old + 1
          and len(window_queries.latest_uses) < {{ limits.past_queries }}
    ) as probe_queries
    asof inner join numbered_requests as last_use
        on last_use.user_id = probe_queries.user_id
       and last_use.query = probe_queries.query
       and probe_queries.as_of > last_use.request_time

    where last_use.seq > probe_queries.too_old

),

query_lists as (

    select
        probe_id,
        list_transform(latest_uses[-{{ limits.past_queries }}:], lambda r: r.query) as past_queries

    from window_queries
    where first = too_old + 1
       or len(latest_uses) >= {{ limits.past_queries }}

    union all

    select
        probe_id,
        list_transform(
            list_sort(list({'last_seq': last_seq, 'query': query}))[-{{ limits.past_queries }}:],
            lambda q: q.query
        ) as past_queries

    from repeated_queries
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
