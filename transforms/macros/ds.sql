{#- The day being built, as a DuckDB DATE literal. Fails clearly when var ds is missing. -#}
{% macro ds_date() -%}
    {%- set ds = var('ds', '') | string -%}
    {%- if execute and not modules.re.match('^\d{4}-\d{2}-\d{2}$', ds) -%}
        {{ exceptions.raise_compiler_error("var 'ds' must be a day YYYY-MM-DD, got '" ~ ds ~ "'") }}
    {%- endif -%}
    date '{{ ds if ds else "1970-01-01" }}'
{%- endmacro %}


{#- Start of the evaluation slice: ds + eval_start_hour hours, as a TIMESTAMP. -#}
{% macro eval_cutoff() -%}
    {%- set hour = var('eval_start_hour', 20) | int(-1) -%}
    {%- if execute and not (0 <= hour <= 24) -%}
        {{ exceptions.raise_compiler_error("var 'eval_start_hour' must be an int in [0, 24], got '" ~ var('eval_start_hour') ~ "'") }}
    {%- endif -%}
    cast({{ ds_date() }} + interval {{ hour }} hour as timestamp)
{%- endmacro %}


{#-
    Pre-hook of every day-keyed model: remove the day before delete+insert adds it back.
    delete+insert alone only deletes the keys present in the new batch, so a rerun whose
    result is empty would leave the old rows of the day behind.
-#}
{% macro delete_day() -%}
    {%- if is_incremental() -%}
        delete from {{ this }} where ds = {{ ds_date() }}
    {%- else -%}
        select 1
    {%- endif -%}
{%- endmacro %}
