-- Point-in-time behaviour of the user behind each request of day ds (docs/contracts.md):
-- a request at time t only sees that user's events with event_time < t, from the last 30 days.
-- See macros/point_in_time_behaviour.sql.

with requests as (

    select
        ds,
        request_id,
        user_id,
        request_time

    from {{ ref('int_requests') }}
    where ds = {{ ds_date() }}

),

probes as (

    select
        request_id as probe_id,
        user_id,
        request_time as as_of

    from requests

),

{{ point_in_time_behaviour('probes') }},

final as (

    select
        requests.ds,
        requests.request_id,
        requests.user_id,
        requests.request_time,
        {{- select_behaviour_lists('behaviour') }}

    from requests
    inner join behaviour
        on behaviour.probe_id = requests.request_id

)

select * from final
