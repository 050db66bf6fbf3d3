-- Training examples of day ds: one row per request before eval_start_hour and item the
-- user clicked, carted or bought, with the user's point-in-time behaviour.

{{ config(contract={'enforced': true}) }}

with requests as (

    select * from {{ ref('int_requests') }}
    where ds = {{ ds_date() }}
      and request_time < {{ eval_cutoff() }}

),

labels as (

    select * from {{ ref('int_request_labels') }}
    where ds = {{ ds_date() }}

),

behaviour as (

    select * from {{ ref('int_user_behaviour') }}
    where ds = {{ ds_date() }}

),

final as (

    select
        requests.ds,
        requests.request_id,
        requests.user_id,
        requests.request_time,
        requests.query,
        labels.item_id,
        labels.label_event,
        {{- select_behaviour_lists('behaviour') }}

    from requests
    inner join labels
        on labels.request_id = requests.request_id
    inner join behaviour
        on behaviour.request_id = requests.request_id

)

select * from final
