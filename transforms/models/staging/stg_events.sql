-- The day's events: trimmed, typed, exact duplicates removed. One row per
-- (request_id, item_id, event_type); the earliest occurrence is kept.

with source as (

    select * from {{ source('landing', 'events') }}

),

renamed as (

    select
        {{ ds_date() }} as ds,
        trim(request_id) as request_id,
        cast(event_time as timestamp) as event_time,
        trim(user_id) as user_id,
        trim(query) as query,
        trim(item_id) as item_id,
        trim(event_type) as event_type,
        cast(position as integer) as position

    from source

),

deduplicated as (

    select *
    from renamed
    qualify row_number() over (
        partition by request_id, item_id, event_type
        order by event_time, position
    ) = 1

)

select * from deduplicated
