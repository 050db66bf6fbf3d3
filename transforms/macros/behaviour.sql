{#- The point-in-time behaviour lists, in contract order (docs/contracts.md). -#}

{#- List lengths and time windows of the contract (ModelConfig rt_len, st_len, lt_len, past_queries),
    and past_query_lookback: how many of a user's latest requests past_queries reads first (a cost
    bound, not part of the contract; see point_in_time_behaviour). -#}
{% macro behaviour_limits() -%}
    {{ return({
        'history_days': 30,
        'short_term_days': 10,
        'rt_len': 50,
        'st_len': 100,
        'lt_len': 100,
        'past_queries': 20,
        'past_query_lookback': 100,
    }) }}
{%- endmacro %}

{% macro behaviour_actions() -%}
    {{ return(['click', 'cart', 'purchase']) }}
{%- endmacro %}


{#- lt_<action>_<attr> suffix -> column of int_user_actions -#}
{% macro behaviour_attributes() -%}
    {{ return({'item': 'item_id', 'shop': 'shop', 'leaf': 'leaf_category', 'brand': 'brand'}) }}
{%- endmacro %}


{% macro behaviour_list_columns() -%}
    {%- set columns = ['rt_items', 'st_items'] -%}
    {%- for action in behaviour_actions() -%}
        {%- for attr in behaviour_attributes() -%}
            {%- do columns.append('lt_' ~ action ~ '_' ~ attr) -%}
        {%- endfor -%}
    {%- endfor -%}
    {%- do columns.append('past_queries') -%}
    {{ return(columns) }}
{%- endmacro %}


{#- "alias.rt_items, alias.st_items, ..." for a select list -#}
{% macro select_behaviour_lists(alias) -%}
    {%- for column in behaviour_list_columns() %}
        {{ alias }}.{{ column }}{{ ',' if not loop.last }}
    {%- endfor %}
{%- endmacro %}
