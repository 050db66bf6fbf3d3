-- The catalogue snapshot of day ds: the items to embed and index.

{{ config(contract={'enforced': true}) }}

with items as (

    select * from {{ ref('stg_items') }}
    where ds = {{ ds_date() }}

),

final as (

    select
        ds,
        item_id,
        title,
        leaf_category,
        top_category,
        brand,
        shop,
        price

    from items

)

select * from final
