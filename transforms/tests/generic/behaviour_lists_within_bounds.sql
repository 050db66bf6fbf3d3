{#-
    Every point-in-time behaviour list of the model (rt_items, st_items, the 12 lt_* lists,
    past_queries) is a non-NULL list no longer than the contract allows. One query per model.
-#}
{% test behaviour_lists_within_bounds(model) %}

{%- set limits = behaviour_limits() %}
{%- set max_lengths = {'rt_items': limits.rt_len, 'st_items': limits.st_len, 'past_queries': limits.past_queries} %}

{%- for column in behaviour_list_columns() %}
select
    '{{ column }}' as list_column,
    len({{ column }}) as list_length
from {{ model }}
where {{ column }} is null
   or len({{ column }}) > {{ max_lengths.get(column, limits.lt_len) }}
{{ 'union all' if not loop.last }}
{%- endfor %}

{% endtest %}
