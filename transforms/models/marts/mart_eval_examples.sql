-- Evaluation examples of day ds: one row per request at or after eval_start_hour with at
-- least one click, cart or purchase. Never trained on by the day's model, which it judges; the
-- next day's training reads them (training.train.train_day).

{{ config(contract={'enforced': true}) }}

with requests as (

    select * from {{ ref('int_requests') }}
    where ds = {{ ds_date() }}
      and request_time >= {{ eval_cutoff() }}

),

labels as (

    select * from {{ ref('int_request_labels') }}
    where ds = {{ ds_date() }}

),

positives as (

    select
        request_id,
        list(item_id order by position, item_id) as clicked_items,
        coalesce(
            list(item_id order by position, item_id) filter (where label_event = 'purchase'),
            []::varchar[]
        ) as purchased_items

    from labels
    group by request_id

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
        positives.clicked_items,
        positives.purchased_items,
        {{- select_behaviour_lists('behaviour') }}

    from requests
    inner join positives
        on positives.request_id = requests.request_id
    inner join behaviour
        on behaviour.request_id = requests.request_id

)

select * from final
