-- The day's catalogue snapshot: trimmed and typed, one row per item.

with source as (

    select * from {{ source('landing', 'items') }}

),

renamed as (

    select
        {{ ds_date() }} as ds,
        trim(item_id) as item_id,
        trim(title) as title,
        trim(leaf_category) as leaf_category,
        trim(top_category) as top_category,
        coalesce(trim(brand), '') as brand,
        trim(shop) as shop,
        cast(price as double) as price

    from source

)

select * from renamed
