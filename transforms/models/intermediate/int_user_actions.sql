-- Click, cart and purchase events of day ds, with the attributes (shop, leaf category,
-- brand) of the acted-on item taken from that day's catalogue snapshot. The history the
-- point-in-time behaviour lists are built from. Attributes of an item missing from the
-- catalogue are '' (like an unknown brand), so every list stays aligned with its actions.

with actions as (

    select
        ds,
        user_id,
        request_id,
        event_time,
        event_type,
        item_id,
        position

    from {{ ref('stg_events') }}
    where ds = {{ ds_date() }}
      and event_type in ('click', 'cart', 'purchase')

),

items as (

    select
        ds,
        item_id,
        shop,
        leaf_category,
        brand

    from {{ ref('stg_items') }}
    where ds = {{ ds_date() }}

),

joined as (

    select
        actions.ds,
        actions.user_id,
        actions.request_id,
        actions.event_time,
        actions.event_type,
        actions.item_id,
        actions.position,
        coalesce(items.shop, '') as shop,
        coalesce(items.leaf_category, '') as leaf_category,
        coalesce(items.brand, '') as brand

    from actions
    left join items
        on items.ds = actions.ds
       and items.item_id = actions.item_id

)

select * from joined
