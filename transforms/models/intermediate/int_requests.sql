-- One row per search request of day ds: who searched what, and when.
-- The request time is its first event (the impression of the result page).

with events as (

    select * from {{ ref('stg_events') }}
    where ds = {{ ds_date() }}

),

requests as (

    select
        ds,
        request_id,
        min(user_id) as user_id,
        min(query) as query,
        min(event_time) as request_time,
        count(*) filter (where event_type = 'impression') as n_impressions,
        count(*) filter (where event_type <> 'impression') as n_actions

    from events
    group by ds, request_id

)

select * from requests
