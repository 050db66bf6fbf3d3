-- One row per request of day ds and item the user acted on, labelled with the
-- strongest action (purchase > cart > click).

with actions as (

    select
        ds,
        request_id,
        item_id,
        event_type,
        event_time,
        position,
        case event_type
            when 'click' then 1
            when 'cart' then 2
            when 'purchase' then 3
        end as label_strength

    from {{ ref('stg_events') }}
    where ds = {{ ds_date() }}
      and event_type in ('click', 'cart', 'purchase')

),

labels as (

    select
        ds,
        request_id,
        item_id,
        -- stg_events holds one row per (request_id, item_id, event_type): no ties
        arg_max(event_type, label_strength) as label_event,
        max(label_strength) as label_strength,
        min(position) as position,
        min(event_time) as first_action_time

    from actions
    group by ds, request_id, item_id

)

select * from labels
