-- Behaviour of each user active on day ds as of the end of that day (ds + 1 day): what a live
-- request after the day would see. Serving reads the newest row of a user (ebr/client.py).
-- Same lists and rules as the training features (macros/point_in_time_behaviour.sql).

{{ config(contract={'enforced': true}) }}

with users as (

    select distinct user_id
    from {{ ref('int_requests') }}
    where ds = {{ ds_date() }}

),

probes as (

    select
        user_id as probe_id,
        user_id,
        cast({{ ds_date() }} + interval 1 day as timestamp) as as_of

    from users

),

{{ point_in_time_behaviour('probes') }},

final as (

    select
        {{ ds_date() }} as ds,
        probes.user_id,
        probes.as_of,
        {{- select_behaviour_lists('behaviour') }}

    from probes
    inner join behaviour
        on behaviour.probe_id = probes.probe_id

)

select * from final
