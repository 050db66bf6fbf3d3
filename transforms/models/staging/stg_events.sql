-- The day's events: trimmed, typed, exact duplicates removed. One row per
-- (request_id, item_id, event_type); the earliest occurrence is kept.
-- Queries are cut to their first query_max_chars characters (code points): the model reads at
-- most a few dozen, and a 10 kB query would otherwise be carried through every past_queries list.
{% set query_max_chars = 512 %}

with source as (

    select * from {{ source('landing', 'events') }}

),

renamed as (

    select
        {{ ds_date() }} as ds,
        trim(request_id) as request_id,
        cast(event_time as timestamp) as event_time,
        trim(user_id) as user_id,
        left(trim(query), {{ query_max_chars }}) as query,
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
